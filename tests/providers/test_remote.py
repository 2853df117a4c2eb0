"""The `openai` provider through DSPy's own client, against real servers on 127.0.0.1."""

import dspy
import pytest

from providers import calls, lms, services
from providers.exceptions import LMMalformedResponseError
from providers.models import Provider
from tests.support.servers import COMPACT_ADAPTER_REPLY, free_port, mlx_lm_server

pytestmark = pytest.mark.django_db


def remote(base_url: str, **fields):
    return services.provider_create(
        **{"name": "remote", "kind": "openai", "model": "default_model", "base_url": base_url}
        | fields
    )


def ask(provider):
    return calls.provider_execute(
        provider=provider,
        program=dspy.Predict("question -> answer"),
        inputs={"question": "What is the capital of France?"},
    )


def test_success_against_mlx_lm_server(tiny_server_url):
    provider = remote(tiny_server_url, max_tokens=8)
    lm = lms.provider_build_lm(provider=provider)
    with dspy.track_usage() as usage:
        outputs = lm("What is the capital of France?")
    assert isinstance(outputs[0], str)
    totals = next(iter(usage.get_total_tokens().values()))
    assert totals["prompt_tokens"] > 0
    assert 0 < totals["completion_tokens"] <= 8


def test_success_through_provider_execute(openai_server):
    openai_server.content = COMPACT_ADAPTER_REPLY
    result = ask(remote(openai_server.base_url, adapter="compact"))
    assert result.outputs == {"answer": "Paris"}
    assert (result.input_tokens, result.output_tokens) == (7, 1)
    assert result.peak_memory_mb is None
    assert result.applied_optimizations == ()


def test_the_key_is_read_from_the_environment_at_call_time(openai_server, monkeypatch):
    openai_server.content = COMPACT_ADAPTER_REPLY
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_REMOTE_TEST", "first-key")
    provider = remote(
        openai_server.base_url,
        adapter="compact",
        api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_REMOTE_TEST",
    )
    ask(provider)
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_REMOTE_TEST", "rotated-key")
    ask(provider)
    assert openai_server.authorizations == ["Bearer first-key", "Bearer rotated-key"]


def test_a_key_removed_from_the_environment_is_an_auth_error(openai_server, monkeypatch):
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_REMOTE_TEST", "k")
    provider = remote(openai_server.base_url, api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_REMOTE_TEST")
    monkeypatch.delenv("DSPY_TOOLKIT_PROVIDER_KEY_REMOTE_TEST")
    with pytest.raises(dspy.LMAuthError, match="DSPY_TOOLKIT_PROVIDER_KEY_REMOTE_TEST"):
        ask(provider)
    assert openai_server.authorizations == []


def test_a_stored_toolkit_variable_is_never_sent(openai_server, monkeypatch):
    # A row written before the rule (or past the services) that names a server variable.
    monkeypatch.setenv("DATABASE_URL", "postgres://app:db-password@db/app")
    provider = remote(openai_server.base_url)
    Provider.objects.filter(pk=provider.pk).update(api_key_env="DATABASE_URL")
    provider.refresh_from_db()
    with pytest.raises(dspy.LMAuthError, match="one of the toolkit's own settings") as caught:
        ask(provider)
    assert "db-password" not in str(caught.value)
    assert openai_server.authorizations == []


def test_http_500_is_a_server_error(openai_server):
    openai_server.mode = "server_error"
    with pytest.raises(dspy.LMServerError, match="internal failure") as caught:
        ask(remote(openai_server.base_url))
    assert not isinstance(caught.value, LMMalformedResponseError)
    assert len(openai_server.requests) == 1  # one attempt: no retries


def test_a_malformed_json_body_is_a_malformed_response_error(openai_server):
    openai_server.mode = "malformed"
    with pytest.raises(LMMalformedResponseError, match="is not JSON") as caught:
        ask(remote(openai_server.base_url))
    assert isinstance(caught.value, dspy.LMServerError)
    assert caught.value.code == "malformed_response"


def test_a_slow_response_is_a_timeout(openai_server):
    openai_server.mode = "slow"
    with pytest.raises(dspy.LMTimeoutError):
        ask(remote(openai_server.base_url, timeout_s=0.3))


def test_http_401_is_an_auth_error(openai_server):
    openai_server.mode = "unauthorized"
    with pytest.raises(dspy.LMAuthError):
        ask(remote(openai_server.base_url))


def test_connection_refused_is_a_transport_error():
    provider = remote(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(dspy.LMTransportError) as caught:
        ask(provider)
    assert not isinstance(caught.value, dspy.LMTimeoutError)


@pytest.mark.slow_model
def test_default_model_behind_mlx_lm_server(default_model_dir):
    with mlx_lm_server(default_model_dir) as url:
        provider = remote(url, max_tokens=24)
        outputs = lms.provider_build_lm(provider=provider)(
            "What is the capital of France? Answer in one sentence."
        )
    assert "Paris" in outputs[0]
