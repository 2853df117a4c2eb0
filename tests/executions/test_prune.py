"""Retention: `execution_prune`, the `executions_prune` command and the daily schedule."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import Schedule

from executions.management.commands.executions_install_schedules import (
    RETENTION_FUNC,
    RETENTION_SCHEDULE_NAME,
)
from executions.models import Execution, ExecutionAttempt
from executions.services.create import execution_create
from executions.services.retention import (
    execution_prune,
    execution_prune_cutoff,
    execution_prune_expired,
)
from tests.support.specs import QA_LEVEL_INPUTS


@pytest.fixture
def make_executions(qa_version, echo_provider, django_capture_on_commit_callbacks):
    """`make_executions(n, finished_days_ago=d)`: n executions run to success (one attempt
    each), then dated as if they had finished d days ago; `queued=True` leaves them queued,
    dated as if queued d days ago."""

    def make(count: int, *, days_ago: float, queued: bool = False) -> list:
        ids = []
        for _ in range(count):
            with django_capture_on_commit_callbacks(execute=not queued):
                ids.append(
                    execution_create(
                        signature="qa", inputs=QA_LEVEL_INPUTS, provider="echo"
                    ).execution.id
                )
        moment = timezone.now() - timedelta(days=days_ago)
        rows = Execution.objects.filter(id__in=ids)
        if queued:
            rows.update(queued_at=moment)
        else:
            assert set(rows.values_list("status", flat=True)) == {"succeeded"}
            rows.update(queued_at=moment, started_at=moment, finished_at=moment)
        return ids

    return make


def _call(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_prune_deletes_old_finished_executions_in_batches_and_reports_progress(
    make_executions,
):
    old = make_executions(5, days_ago=40)
    recent = make_executions(2, days_ago=5)
    waiting = make_executions(1, days_ago=400, queued=True)
    steps = []
    result = execution_prune(
        older_than=execution_prune_cutoff(days=30), batch_size=2, progress=steps.append
    )
    assert (result.executions, result.attempts, result.total) == (5, 5, 5)
    assert [(step.executions, step.total) for step in steps] == [(2, 5), (4, 5), (5, 5)]
    assert not Execution.objects.filter(id__in=old).exists()
    assert not ExecutionAttempt.objects.filter(execution_id__in=old).exists()
    assert set(Execution.objects.values_list("id", flat=True)) == {*recent, *waiting}
    assert ExecutionAttempt.objects.filter(execution_id__in=recent).count() == 2


@pytest.mark.django_db
def test_each_batch_is_its_own_short_transaction(make_executions):
    make_executions(3, days_ago=40)
    with CaptureQueriesContext(connection) as queries:
        execution_prune(older_than=execution_prune_cutoff(days=30), batch_size=1)
    # The test runs inside a transaction: each batch shows as a savepoint of its own.
    savepoints = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SAVEPOINT")]
    assert len(savepoints) == 3


@pytest.mark.django_db
def test_dry_run_counts_and_deletes_nothing(make_executions):
    make_executions(3, days_ago=40)
    output = _call("executions_prune", "--older-than-days", "30", "--dry-run")
    assert "would delete 3 execution(s) and 3 attempt(s)" in output
    assert Execution.objects.count() == 3


@pytest.mark.django_db
def test_the_command_prints_progress_and_uses_the_retention_setting(make_executions, settings):
    settings.EXECUTIONS_RETENTION_DAYS = 10
    make_executions(3, days_ago=12)
    make_executions(1, days_ago=8)
    output = _call("executions_prune", "--batch-size", "2")
    assert "2/3 executions deleted (2 attempts)" in output
    assert "3/3 executions deleted (3 attempts)" in output
    assert "deleted 3 execution(s) and 3 attempt(s)" in output
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_retention_zero_keeps_everything_unless_asked(make_executions, settings):
    settings.EXECUTIONS_RETENTION_DAYS = 0
    make_executions(2, days_ago=1000)
    assert "Retention is off" in _call("executions_prune")
    assert execution_prune_expired() == "retention is off (EXECUTIONS_RETENTION_DAYS=0)"
    assert Execution.objects.count() == 2
    # An explicit 0 days: every finished execution.
    assert "deleted 2 execution(s)" in _call("executions_prune", "--older-than-days", "0")
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_the_scheduled_run_applies_the_settings(make_executions, settings):
    settings.EXECUTIONS_RETENTION_DAYS = 30
    settings.EXECUTIONS_PRUNE_BATCH_SIZE = 1
    make_executions(2, days_ago=31)
    kept = make_executions(1, days_ago=29)
    assert execution_prune_expired() == "deleted 2 executions and 2 attempts"
    assert list(Execution.objects.values_list("id", flat=True)) == kept


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--older-than-days", "-1"], "at least 0, got '-1'"),
        (["--older-than-days", "many"], "at least 0, got 'many'"),
        (["--batch-size", "0"], "at least 1, got '0'"),
        (["--unknown"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_a_command_error(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("executions_prune", *arguments)


@pytest.mark.django_db
def test_bootstrap_installs_the_daily_retention_schedule(tmp_path, settings):
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("bootstrap", "--skip-model", stdout=StringIO())
    schedule = Schedule.objects.get(name=RETENTION_SCHEDULE_NAME)
    assert (schedule.func, schedule.schedule_type, schedule.repeats, schedule.cluster) == (
        RETENTION_FUNC,
        Schedule.DAILY,
        -1,
        None,
    )
    assert import_string(schedule.func) is execution_prune_expired
