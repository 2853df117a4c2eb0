"""The generation settings an execution runs with respect `EXECUTIONS_MAX_TOKENS_LIMIT`,
whether the request or the signature version's `lm_defaults` set `max_tokens`."""

import pytest

from executions.exceptions import InvalidConfig
from executions.models import Execution
from executions.services.create import execution_create
from registry.services.signatures import signature_create
from registry.services.versions import signature_version_create
from tests.support.engines import ECHO_ENGINE
from tests.support.factories import ProviderFactory

SPEC = {
    "instructions": "Answer.",
    "input_fields": [{"name": "question", "type": "str"}],
    "output_fields": [{"name": "answer", "type": "str"}],
    "lm_defaults": {"max_tokens": 20_000, "temperature": 0.5},
}


@pytest.fixture
def greedy_version(db):
    """A version whose lm_defaults ask for more tokens than the server allows one execution."""
    ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    return signature_version_create(signature=signature_create(name="greedy"), spec=SPEC).version


def test_lm_defaults_above_the_limit_are_refused_at_create_time(greedy_version, settings):
    settings.EXECUTIONS_MAX_TOKENS_LIMIT = 4096
    with pytest.raises(InvalidConfig) as refused:
        execution_create(signature="greedy", inputs={"question": "q"})
    problem = refused.value.errors["max_tokens"][0]
    assert problem["code"] == "out_of_range"
    assert "20000" in problem["message"] and "4096" in problem["message"]
    assert refused.value.status_code == 400
    assert not Execution.objects.exists()


def test_a_request_within_the_limit_overrides_the_defaults(greedy_version, settings):
    settings.EXECUTIONS_MAX_TOKENS_LIMIT = 4096
    result = execution_create(
        signature="greedy", inputs={"question": "q"}, config={"max_tokens": 100}
    )
    assert result.execution.config == {"max_tokens": 100, "temperature": 0.5}


def test_the_request_itself_is_bounded_too(greedy_version, settings):
    settings.EXECUTIONS_MAX_TOKENS_LIMIT = 4096
    with pytest.raises(InvalidConfig) as refused:
        execution_create(signature="greedy", inputs={"question": "q"}, config={"max_tokens": 5000})
    assert refused.value.errors["max_tokens"][0]["code"] == "out_of_range"


def test_the_api_answers_the_refusal_in_the_error_shape(greedy_version, settings, admin_client):
    settings.EXECUTIONS_MAX_TOKENS_LIMIT = 4096
    response = admin_client.post(
        "/api/v1/dspy/execute",
        {"signature": "greedy", "inputs": {"question": "q"}, "mode": "async"},
        content_type="application/json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_config"
    assert body["errors"]["max_tokens"][0]["code"] == "out_of_range"
