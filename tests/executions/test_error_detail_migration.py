"""Migration 0006 takes the upstream text out of stored error messages.

Rows are made at today's schema, the database goes back to 0005 (before `error_detail`), the
rows get what the toolkit used to store there (an upstream body echoing the key), and the
migration runs forward again.
"""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from executions.models import Execution, ExecutionAttempt
from tests.support.specs import QA_LEVEL_INPUTS

KEY_ENV = "DSPY_TOOLKIT_PROVIDER_KEY_MIGRATION_TEST"
KEY = "migration-test-planted-key"
LEAKED = f"[openai/m] invalid key Bearer {KEY} for http://u:{KEY}@host/v1"


def _migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@pytest.mark.django_db(transaction=True)
def test_stored_upstream_text_moves_to_the_scrubbed_detail(qa_version, echo_provider, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    execution = Execution.objects.create(
        signature_version=qa_version,
        requested_provider=echo_provider,
        inputs=QA_LEVEL_INPUTS,
        status=Execution.Status.FAILED,
        finished_at=timezone.now(),
        error_code="providers_exhausted",
    )
    attempt = ExecutionAttempt.objects.create(
        execution=execution,
        run=1,
        position=0,
        provider=echo_provider,
        outcome=ExecutionAttempt.Outcome.FAILED,
        error_code="server",
        started_at=timezone.now(),
    )
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        _migrate([("executions", "0005_breakers_move")])
        Execution.objects.filter(pk=execution.pk).update(error_message=f"echo: {LEAKED}")
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE executions_executionattempt SET error_message = %s WHERE id = %s",
                [LEAKED, attempt.pk],
            )
    finally:
        _migrate(latest)

    attempt.refresh_from_db()
    execution.refresh_from_db()
    assert attempt.error_message == "The provider call failed (server)."
    assert attempt.error_detail == (
        "[openai/m] invalid key Bearer [redacted] for http://[redacted]@host/v1"
    )
    assert execution.error_message == (
        "echo: [openai/m] invalid key Bearer [redacted] for http://[redacted]@host/v1"
    )
