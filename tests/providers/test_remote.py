"""The `openai` provider through DSPy's own client, against real servers on 127.0.0.1."""

import dspy
import pytest

from providers import services
from providers.exceptions import LMMalformedResponseError
from tests.providers.servers import free_port, mlx_lm_server, scripted_server

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def tiny_server_url(tiny_model_dir):
    with mlx_lm_server(tiny_model_dir) as url:
        yield url


@pytest.fixture
def scripted():
    with scripted_server() as server:
        yield server


def remote(base_url: str, **fields):
    return services.provider_create(
        **{"name": "remote", "kind": "openai", "model": "default_model", "base_url": base_url}
        | fields
    )


def ask(provider):
    return services.provider_execute(
        provider=provider,
        program=dspy.Predict("question -> answer"),
        inputs={"question": "What is the capital of France?"},
    )


def test_success_against_mlx_lm_server(tiny_server_url):
    provider = remote(tiny_server_url, max_tokens=8)
    lm = services.provider_build_lm(provider=provider)
    with dspy.track_usage() as usage:
        outputs = lm("What is the capital of France?")
    assert isinstance(outputs[0], str)
    totals = next(iter(usage.get_total_tokens().values()))
    assert totals["prompt_tokens"] > 0
    assert 0 < totals["completion_tokens"] <= 8


def test_success_through_provider_execute(scripted):
    result = ask(remote(scripted.base_url, adapter="compact"))
    assert result.outputs == {"answer": "Paris"}
    assert (result.input_tokens, result.output_tokens) == (7, 1)
    assert result.peak_memory_mb is None
    assert result.applied_optimizations == ()


def test_the_key_is_read_from_the_environment_at_call_time(scripted, monkeypatch):
    monkeypatch.setenv("REMOTE_TEST_KEY", "first-key")
    provider = remote(scripted.base_url, adapter="compact", api_key_env="REMOTE_TEST_KEY")
    ask(provider)
    monkeypatch.setenv("REMOTE_TEST_KEY", "rotated-key")
    ask(provider)
    assert scripted.authorizations == ["Bearer first-key", "Bearer rotated-key"]


def test_a_key_removed_from_the_environment_is_an_auth_error(scripted, monkeypatch):
    monkeypatch.setenv("REMOTE_TEST_KEY", "k")
    provider = remote(scripted.base_url, api_key_env="REMOTE_TEST_KEY")
    monkeypatch.delenv("REMOTE_TEST_KEY")
    with pytest.raises(dspy.LMAuthError, match="REMOTE_TEST_KEY"):
        ask(provider)
    assert scripted.authorizations == []


def test_http_500_is_a_server_error(scripted):
    scripted.mode = "server_error"
    with pytest.raises(dspy.LMServerError, match="internal failure") as caught:
        ask(remote(scripted.base_url))
    assert not isinstance(caught.value, LMMalformedResponseError)
    assert len(scripted.authorizations) == 1  # one attempt: no retries


def test_a_malformed_json_body_is_a_malformed_response_error(scripted):
    scripted.mode = "malformed"
    with pytest.raises(LMMalformedResponseError, match="is not JSON") as caught:
        ask(remote(scripted.base_url))
    assert isinstance(caught.value, dspy.LMServerError)
    assert caught.value.code == "malformed_response"


def test_a_slow_response_is_a_timeout(scripted):
    scripted.mode = "slow"
    with pytest.raises(dspy.LMTimeoutError):
        ask(remote(scripted.base_url, timeout_s=0.3))


def test_http_401_is_an_auth_error(scripted):
    scripted.mode = "unauthorized"
    with pytest.raises(dspy.LMAuthError):
        ask(remote(scripted.base_url))


def test_connection_refused_is_a_transport_error():
    provider = remote(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(dspy.LMTransportError) as caught:
        ask(provider)
    assert not isinstance(caught.value, dspy.LMTimeoutError)


@pytest.mark.slow_model
def test_default_model_behind_mlx_lm_server(default_model_dir):
    with mlx_lm_server(default_model_dir) as url:
        provider = remote(url, max_tokens=24)
        outputs = services.provider_build_lm(provider=provider)(
            "What is the capital of France? Answer in one sentence."
        )
    assert "Paris" in outputs[0]
