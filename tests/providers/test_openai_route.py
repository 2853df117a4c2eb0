"""The OpenAI-compatible route, driven by the real `openai` library and by `dspy.LM` against
a real HTTP server (pytest-django's `live_server` on 127.0.0.1)."""

import secrets

import dspy
import openai
import pytest
from django.core.cache import cache
from django_q.conf import Conf
from django_q.models import Task
from django_q.signals import pre_execute
from rest_framework.test import APIClient

from providers.breakers import breaker_force_open
from providers.mlx.runtime import loaded_models, unload_model
from providers.models import Provider
from tests.support.engines import ECHO_ENGINE, INPUT_TOKENS
from tests.support.factories import APIKeyFactory, ProviderFactory
from tests.support.metrics import scrape_client

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ROUTE = "/api/v1/openai/chat/completions"


@pytest.fixture
def key(transactional_db):
    cache.clear()
    return APIKeyFactory(name="dspy-program")


@pytest.fixture
def base_url(live_server) -> str:
    return f"{live_server.url}/api/v1/openai"


@pytest.fixture
def client(base_url, key) -> openai.OpenAI:
    # No retries: each test counts the calls it makes.
    return openai.OpenAI(base_url=base_url, api_key=key.raw_key, max_retries=0, timeout=30)


@pytest.fixture
def echo(db) -> Provider:
    return ProviderFactory(name="echo", engine_path=ECHO_ENGINE)


def test_the_openai_library_gets_a_completion_from_a_custom_engine(client, echo):
    completion = client.chat.completions.create(model="echo", messages=QUESTION, temperature=0)
    assert completion.object == "chat.completion"
    assert completion.model == "echo"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == " Paris"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == INPUT_TOKENS
    assert completion.usage.completion_tokens == 1
    assert completion.usage.total_tokens == INPUT_TOKENS + 1
    assert [model.id for model in client.models.list()] == ["echo"]


# DSPy's own HTTP client (`lm15`, what `auto` picks) and LiteLLM's, which send other fields.
@pytest.mark.parametrize("engine", ["auto", "litellm"])
def test_a_dspy_program_uses_a_toolkit_provider_as_its_lm(
    base_url, key, openai_server, engine, monkeypatch
):
    """The toolkit's provider is itself an OpenAI-compatible endpoint answering in the
    ChatAdapter's format: the program's adapter formats and parses, the toolkit only relays."""
    # Offline, LiteLLM would spend seconds trying to download its price list on import.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    ProviderFactory(name="remote", kind="openai", base_url=openai_server.base_url)
    lm = dspy.LM(
        "openai/remote",
        api_base=base_url,
        api_key=key.raw_key,
        cache=False,
        num_retries=0,
        engine=engine,
    )
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        prediction = dspy.Predict("question -> answer")(question="What is the capital of France?")
    assert prediction.answer == "Paris"
    # The program's prompt went through unchanged: its system message names the fields.
    sent = openai_server.requests[0].body.decode()
    assert "[[ ## answer ## ]]" in sent and "What is the capital of France?" in sent
    # The upstream got the provider's own credentials, never the client's API key.
    assert key.raw_key not in (openai_server.authorizations[0] or "")


def test_the_fallback_answers_when_the_first_provider_fails(client, echo, start_openai_server):
    failing = start_openai_server(mode="server_error")
    ProviderFactory(name="flaky", kind="openai", base_url=failing.base_url, fallbacks=[echo])
    completion = client.chat.completions.create(model="flaky", messages=QUESTION)
    assert completion.model == "echo"
    assert completion.choices[0].message.content == " Paris"
    assert len(failing.requests) == 1


def test_every_provider_failing_is_a_502_with_the_toolkits_message(client, start_openai_server):
    failing = start_openai_server(mode="server_error")
    ProviderFactory(name="flaky", kind="openai", base_url=failing.base_url)
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="flaky", messages=QUESTION)
    assert raised.value.status_code == 502
    assert raised.value.code == "providers_exhausted"
    assert "The provider flaky answered HTTP 500 (server error)." in raised.value.message
    assert "internal failure" not in raised.value.message  # the upstream's own words


def test_a_request_the_provider_refuses_is_a_400_without_fallback(
    bearer_client, echo, start_openai_server
):
    refusing = start_openai_server(mode="echo", echo_status=400)
    ProviderFactory(name="picky", kind="openai", base_url=refusing.base_url, fallbacks=[echo])
    response = _post(bearer_client, model="picky")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "provider_rejected_request"
    assert body["message"] == "The provider picky answered HTTP 400 (client error)."


def test_an_open_breaker_is_refused_with_retry_after(client, echo):
    breaker_force_open(provider=echo)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="echo", messages=QUESTION)
    assert raised.value.status_code == 503
    assert raised.value.code == "circuit_open"
    assert int(raised.value.response.headers["Retry-After"]) > 0
    assert "The circuit breaker of echo is open." in raised.value.message


def test_an_unknown_model_is_a_404_and_a_disabled_one_a_400(client, echo):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert raised.value.code == "provider_not_found"
    assert "No provider named 'gpt-4o'." in str(raised.value)
    Provider.objects.filter(pk=echo.pk).update(enabled=False)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="echo", messages=QUESTION)
    assert raised.value.code == "provider_disabled"
    assert client.models.list().data == []


def test_a_wrong_key_is_a_401(base_url, echo):
    wrong = openai.OpenAI(base_url=base_url, api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.chat.completions.create(model="echo", messages=QUESTION)
    assert raised.value.code == "authentication_failed"


# The same checks through Django's test client: faster, and the body's fields are visible.


@pytest.fixture
def bearer_client(db) -> APIClient:
    key = APIKeyFactory(name="bearer")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key.raw_key}")
    return api


def _post(api: APIClient, **body):
    return api.post(ROUTE, {"model": "echo", "messages": QUESTION} | body, format="json")


def test_a_bearer_key_has_the_rate_limit_of_its_key(bearer_client, echo, settings):
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": {"api_key": "1/min", "user": "1/min"}
    }
    cache.clear()
    assert _post(bearer_client).status_code == 200
    response = _post(bearer_client)
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"


def test_no_credentials_is_a_401(db):
    response = APIClient().post(ROUTE, {"model": "echo", "messages": QUESTION}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("messages", "field_code"),
    [
        ([], "min_length"),
        ("hello", "not_a_list"),
        ([{"role": "tool", "content": "x"}], "invalid_choice"),
        ([{"role": "user", "content": 3}], "wrong_type"),
        ([{"role": "user"}], "required"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "unsupported_content",
        ),
        ([{"role": "assistant", "content": "x", "tool_calls": []}], "unknown_field"),
        ([{"role": "system", "content": ""}, {"role": "user", "content": "q"}], "blank"),
        ([{"role": "system", "content": "Be brief."}], "no_conversation"),
    ],
)
def test_bad_messages_are_a_400_naming_the_field(bearer_client, echo, messages, field_code):
    response = _post(bearer_client, messages=messages)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_request"
    assert field_code in str(body["errors"]["messages"]), body


@pytest.mark.parametrize(
    ("extra", "code", "field"),
    [
        ({"stream": True}, "streaming_not_supported", "stream"),
        ({"n": 2}, "unsupported_parameter", "n"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "unsupported_parameter",
            "tools",
        ),
        ({"response_format": {"type": "json_object"}}, "unsupported_parameter", "response_format"),
        ({"logprobs": True}, "unsupported_parameter", "logprobs"),
        ({"max_tokens": 10**6}, "invalid_config", "max_tokens"),
        ({"temperature": 3}, "invalid_config", "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "invalid_config", "stop"),
    ],
)
def test_unsupported_or_out_of_bounds_settings_are_a_400(bearer_client, echo, extra, code, field):
    response = _post(bearer_client, **extra)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == code
    assert field in body["errors"], body


def test_text_parts_defaults_and_extra_fields_openai_clients_send_are_accepted(bearer_client, echo):
    response = _post(
        bearer_client,
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Capital of France?", "name": "alice"},
        ],
        stream=False,
        n=1,
        response_format={"type": "text"},
        max_completion_tokens=8,
        stop="\n",
        user="someone",
        seed=3,
        stream_options=None,
    )
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == " Paris"


def test_each_completion_is_counted_in_the_metrics(bearer_client, echo, client_for_metrics):
    before = scrape_client(client_for_metrics)
    assert _post(bearer_client).status_code == 200
    breaker_force_open(provider=echo)
    assert _post(bearer_client).status_code == 503
    after = scrape_client(client_for_metrics)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    succeeded = {"provider": "echo", "outcome": "succeeded", "error_code": ""}
    refused = {"provider": "echo", "outcome": "refused", "error_code": "circuit_open"}
    assert grew("dspy_toolkit_chat_completions_total", **succeeded) == 1
    assert grew("dspy_toolkit_chat_completions_total", **refused) == 1
    assert grew("dspy_toolkit_chat_tokens_total", provider="echo", direction="input") == 7
    assert (
        grew(
            "dspy_toolkit_chat_completion_duration_seconds_count",
            provider="echo",
            outcome="succeeded",
        )
        == 1
    )


@pytest.fixture
def client_for_metrics():
    from django.test import Client

    return Client()


PROVIDER_KEY_ENV = "DSPY_TOOLKIT_PROVIDER_KEY_CHAT_ROUTE"
# Shaped like no credential pattern: only knowing the value can remove it.
PROVIDER_KEY = f"planted{secrets.token_hex(16)}"


def test_the_providers_key_reaches_no_answer_error_or_log(
    bearer_client, start_openai_server, monkeypatch, caplog
):
    """The upstream echoes the toolkit's credentials into its answer, then into its error."""
    monkeypatch.setenv(PROVIDER_KEY_ENV, PROVIDER_KEY)
    echoing = start_openai_server(mode="echo", echo_status=200, echo_body="completion")
    ProviderFactory(
        name="echo", kind="openai", base_url=echoing.base_url, api_key_env=PROVIDER_KEY_ENV
    )
    answered = _post(bearer_client)
    assert answered.status_code == 200, answered.content
    assert echoing.authorizations == [f"Bearer {PROVIDER_KEY}"]
    # The answer quoted the key; the client gets it redacted.
    assert "Bearer [redacted]" in answered.json()["choices"][0]["message"]["content"]
    echoing.echo_status, echoing.echo_body = 500, "error"
    failed = _post(bearer_client)
    assert failed.status_code == 502, failed.content
    for text in (answered.content.decode(), failed.content.decode(), caplog.text):
        assert PROVIDER_KEY not in text
    assert "failed: " in caplog.text  # the scrubbed detail was logged for the operator


# Local models run in the inference cluster -------------------------------------------------


def test_a_local_model_is_called_through_an_inference_task(bearer_client, tiny_model_dir, db):
    """The test settings run django-q2 tasks inline (`Q_SYNC`): this proves the dispatch (the
    task, its arguments, its cluster, its result read back through the broker's result store),
    not that another process ran it (`test_a_local_model_answers_from_a_real_inference_cluster`
    does)."""
    ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir), max_tokens=4)
    dispatched = []

    def record(sender, *, func, task, **kwargs):
        dispatched.append((task["func"], task.get("cluster"), task["name"]))

    pre_execute.connect(record, dispatch_uid="test_openai_route")
    try:
        response = bearer_client.post(
            ROUTE, {"model": "tiny", "messages": QUESTION, "max_tokens": 3}, format="json"
        )
    finally:
        pre_execute.disconnect(dispatch_uid="test_openai_route")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == "tiny"
    tokens = body["usage"]["completion_tokens"]
    assert 1 <= tokens <= 3
    # The random-weight model rarely ends within 3 tokens; either way the reason is the engine's.
    assert body["choices"][0]["finish_reason"] == ("length" if tokens == 3 else "stop")
    assert dispatched == [("providers.chat.provider_chat_task", "inference", "chat-tiny")]
    # The conversation and the answer are not kept among django-q2's saved tasks.
    assert not Task.objects.exists()


def test_an_inference_cluster_that_does_not_answer_is_a_504(
    bearer_client, tiny_model_dir, db, settings, monkeypatch
):
    # No cluster runs and tasks are queued, not run inline: the call waits and gives up.
    monkeypatch.setattr(Conf, "SYNC", False)
    settings.PROVIDERS_CHAT_QUEUE_WAIT_S = 0.5
    ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir), timeout_s=0.5)
    response = bearer_client.post(ROUTE, {"model": "tiny", "messages": QUESTION}, format="json")
    assert response.status_code == 504, response.content
    body = response.json()
    assert body["code"] == "providers_timed_out"
    assert "'inference' cluster did not answer" in body["message"]


@pytest.mark.qcluster
def test_a_local_model_answers_from_a_real_inference_cluster(
    bearer_client, tiny_model_dir, start_cluster, transactional_db
):
    ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir), max_tokens=4)
    # An earlier test may have loaded it here (inline tasks): a call made here would load it.
    unload_model(model_path=str(tiny_model_dir))
    start_cluster("inference")
    response = bearer_client.post(
        ROUTE, {"model": "tiny", "messages": QUESTION, "max_tokens": 3}, format="json"
    )
    # This process runs no task (`start_cluster` turns the inline mode off): only the
    # inference cluster could have answered.
    assert response.status_code == 200, response.content
    assert response.json()["model"] == "tiny"
    assert not Task.objects.exists()
    assert str(tiny_model_dir.resolve()) not in [model.path for model in loaded_models()]
