"""Fallback from a failing remote provider to the real default local model."""

from io import StringIO

import pytest
from django.core.management import call_command

from executions.models import Execution
from executions.services.create import execution_create
from providers.selectors import DEFAULT_PROVIDER_NAME, provider_get
from tests.support.factories import CLOSED_PORT_URL, ProviderFactory, SignatureVersionFactory

SIMPLE_QA = {
    "instructions": "Answer the question with a short factual answer.",
    "input_fields": [{"name": "question", "type": "str", "description": "The question."}],
    "output_fields": [{"name": "answer", "type": "str", "description": "The answer."}],
    "module_kind": "Predict",
}


@pytest.mark.slow_model
@pytest.mark.django_db
def test_a_failing_provider_falls_back_to_the_default_local_model(
    django_capture_on_commit_callbacks,
):
    call_command("providers_install_default_model", stdout=StringIO())
    local = provider_get(name=DEFAULT_PROVIDER_NAME)
    ProviderFactory(
        name="remote", kind="openai", base_url=CLOSED_PORT_URL, adapter="chat", fallbacks=(local,)
    )
    SignatureVersionFactory(signature__name="capitals", spec=SIMPLE_QA)

    with django_capture_on_commit_callbacks(execute=True):
        created = execution_create(
            signature="capitals",
            inputs={"question": "What is the capital of France?"},
            provider="remote",
            config={"max_tokens": 16},
        )
    execution = Execution.objects.get(id=created.execution.id)
    assert execution.status == "succeeded", execution.error_message
    assert execution.provider == local
    assert execution.outputs["answer"].strip()
    assert execution.input_tokens > 0 and execution.output_tokens > 0
    attempts = list(execution.provider_attempts.order_by("position"))
    assert [(a.provider.name, a.outcome, a.error_type) for a in attempts] == [
        ("remote", "failed", "LMTransportError"),
        (DEFAULT_PROVIDER_NAME, "succeeded", ""),
    ]
