"""Outputs are stored whatever the model generated."""

import pytest

from executions.services.create import execution_create
from tests.support.engines import NUL_ENGINE
from tests.support.factories import ProviderFactory
from tests.support.specs import QA_LEVEL_INPUTS


@pytest.mark.django_db
def test_a_nul_character_in_the_outputs_does_not_fail_the_execution(
    qa_version, django_capture_on_commit_callbacks
):
    # PostgreSQL refuses U+0000 in jsonb ("unsupported Unicode escape sequence").
    ProviderFactory(name="nul", engine_path=NUL_ENGINE)
    with django_capture_on_commit_callbacks(execute=True):
        execution = execution_create(
            signature="qa", inputs=QA_LEVEL_INPUTS, provider="nul"
        ).execution
    execution.refresh_from_db()
    assert execution.status == "succeeded", execution.error_message
    assert execution.outputs == {"answer": "Pa\ufffdris"}
