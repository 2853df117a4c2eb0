"""The worker's path for one execution stays lean: a bounded number of SQL statements, the
program built once per version, no thread started per task."""

import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.models import Execution
from executions.services.create import execution_create
from executions.tasks import execution_run
from providers.models import CircuitBreaker
from registry.services import versions
from tests.support.specs import QA_LEVEL_INPUTS

# Claim (one UPDATE ... RETURNING), load (the execution with its version and provider), the
# fallback chain, the breaker's read before and after the call, the attempt and the finish in
# one transaction (and its savepoint's two statements inside the test's transaction), and the
# notification of the finish.
MAX_STATEMENTS = 10


def _queued() -> Execution:
    # Queued and not enqueued: the enqueue waits for a commit that never comes in this test's
    # transaction, and the test runs the task itself.
    return execution_create(
        signature="qa", inputs=QA_LEVEL_INPUTS, provider="echo", mode="async"
    ).execution


@pytest.mark.django_db
def test_one_execution_takes_a_bounded_number_of_statements(
    qa_version, echo_provider, django_assert_max_num_queries
):
    warm = _queued()
    # The first execution of a version builds its program and creates the breaker's row.
    execution_run(str(warm.id))
    # A healthy provider's steady state: a breaker window full of successes (only the first
    # calls after a state change write it, under its lock).
    breaker = CircuitBreaker.objects.get(provider=echo_provider)
    breaker.window = ["s"] * breaker.sliding_window_size
    breaker.save(update_fields=["window"])
    execution = _queued()
    with (
        django_assert_max_num_queries(MAX_STATEMENTS),
        CaptureQueriesContext(connection) as queries,
    ):
        execution_run(str(execution.id))
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    statements = [query["sql"] for query in queries.captured_queries]
    assert not any("FOR UPDATE" in sql for sql in statements), statements


@pytest.mark.django_db
def test_the_program_is_built_once_per_version(qa_version, echo_provider, monkeypatch):
    monkeypatch.setattr(versions, "_programs", type(versions._programs)())
    for _ in range(3):
        execution_run(str(_queued().id))
    assert set(Execution.objects.values_list("status", flat=True)) == {"succeeded"}
    assert list(versions._programs) == [("qa", qa_version.content_hash)]
    program = versions.signature_version_program(version=qa_version)
    assert versions.signature_version_program(version=qa_version) is program


@pytest.mark.django_db
def test_no_thread_is_started_per_task(qa_version, echo_provider):
    execution_run(str(_queued().id))
    before = {thread.ident for thread in threading.enumerate()}
    for _ in range(3):
        execution_run(str(_queued().id))
    started = {thread.ident for thread in threading.enumerate()} - before
    assert not started
