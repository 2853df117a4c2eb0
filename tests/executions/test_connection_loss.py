"""A lost database connection, in one process: the server really drops the connection
(`pg_terminate_backend`) at a chosen statement, before it runs or after it ran with its answer
lost. Requests answer with what they wrote or a 503, never a 500; workers record the outcome of
a provider call they made instead of failing the execution or calling the provider again.

The same faults under load, with real processes, are in test_faults.py.
"""

import os
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis
from django.contrib.auth.models import User
from django.db import OperationalError, connection, connections, transaction
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from core.db import RetryPolicy, db_retry
from core.errors import DatabaseUnavailable
from executions.broker import broker_stranded_task_ids
from executions.models import Execution, ExecutionAttempt
from executions.services.create import execution_create
from executions.services.reaper import execution_reap_stale
from executions.services.runs import execution_claim, execution_process
from executions.tasks import execution_run
from providers.models import CircuitBreaker
from tests.executions.conftest import EXECUTE
from tests.support.engines import ScriptedEngine
from tests.support.factories import ProviderFactory
from tests.support.faults import terminate_own_connection
from tests.support.specs import QA_LEVEL_INPUTS


class LoseConnection:
    """An execute wrapper (`connection.execute_wrapper`): for the first `times` statements that
    `match`, the server drops the connection, either before the statement runs (it fails) or
    after it ran (it took effect; its answer is lost)."""

    def __init__(self, match: Callable[[str], bool], *, after: bool = False, times: int = 1):
        self.match = match
        self.after = after
        self.remaining = times
        self.hits = 0

    def __call__(self, execute, sql, params, many, context):
        if not self.remaining or not self.match(sql):
            return execute(sql, params, many, context)
        self.remaining -= 1
        self.hits += 1
        if not self.after:
            terminate_own_connection()
            return execute(sql, params, many, context)
        execute(sql, params, many, context)
        terminate_own_connection()
        raise OperationalError("server closed the connection unexpectedly")


def inserts_into(table: str) -> Callable[[str], bool]:
    return lambda sql: sql.startswith(f'INSERT INTO "{table}"')


def updates(table: str, column: str) -> Callable[[str], bool]:
    return lambda sql: sql.startswith(f'UPDATE "{table}"') and f'"{column}"' in sql


def _create(**overrides):
    arguments = {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo"} | overrides
    return execution_create(**arguments)


# db_retry ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_db_retry_reconnects_after_the_server_dropped_the_connection():
    terminate_own_connection()
    pauses: list[float] = []
    policy = RetryPolicy(max_elapsed_s=5, sleep=pauses.append)
    assert db_retry(lambda: User.objects.count(), policy=policy) == 0
    assert pauses == [0.05]


def test_db_retry_backs_off_and_gives_up_when_its_time_is_up():
    clock = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    def lost():
        raise OperationalError("server closed the connection unexpectedly")

    policy = RetryPolicy(
        max_elapsed_s=3.0,
        first_pause_s=0.1,
        max_pause_s=1.0,
        sleep=sleep,
        monotonic=lambda: clock[0],
    )
    with pytest.raises(OperationalError):
        db_retry(lost, policy=policy)
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.0]


@pytest.mark.django_db(transaction=True)
def test_db_retry_never_retries_inside_a_transaction():
    calls = []

    def lost():
        calls.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    with transaction.atomic(), pytest.raises(OperationalError):
        db_retry(lost, policy=RetryPolicy(max_elapsed_s=5, sleep=lambda _: None))
    assert len(calls) == 1


# The web side --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_insert_lost_before_its_commit_is_made_once_more(qa_version, echo_provider):
    lose = LoseConnection(inserts_into("executions_execution"))
    with connection.execute_wrapper(lose):
        result = _create(idempotency_key="k1")
    assert lose.hits == 1
    assert result.created
    execution = Execution.objects.get()
    assert execution.id == result.execution.id
    # Enqueued once, on the commit that went through (the test settings run tasks inline).
    assert (execution.status, execution.attempts) == ("succeeded", 1)


@pytest.mark.django_db(transaction=True)
def test_a_commit_whose_answer_was_lost_answers_with_the_committed_row(
    qa_version, echo_provider, monkeypatch
):
    database = connections["default"]
    real_commit = database.commit
    lost = []

    def commit_then_lose_the_answer():
        real_commit()
        if not lost:
            lost.append(1)
            terminate_own_connection()
            raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(database, "commit", commit_then_lose_the_answer)
    result = _create(idempotency_key="k1")
    assert lost and result.created
    execution = Execution.objects.get()
    assert execution.id == result.execution.id
    # Its on-commit enqueue never ran; the request enqueued it after finding the row.
    assert execution.task_id
    assert (execution.status, execution.attempts) == ("succeeded", 1)


@pytest.mark.django_db(transaction=True)
def test_a_database_that_stays_away_is_a_503_with_retry_after(
    qa_version, echo_provider, api_client
):
    lose = LoseConnection(inserts_into("executions_execution"), times=100)
    with connection.execute_wrapper(lose):
        with pytest.raises(DatabaseUnavailable):
            _create()
        response = api_client.post(
            EXECUTE,
            {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="k1",
        )
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "database_unavailable"
    assert response["Retry-After"] == str(DatabaseUnavailable.retry_after_s)
    assert not Execution.objects.exists()
    # The client's retry with the same key, once the database is back, runs it once.
    retried = api_client.post(
        EXECUTE,
        {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    assert retried.status_code == 200
    assert Execution.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_read_on_a_dead_connection_is_a_503_not_a_500(
    qa_version, echo_provider, api_key, api_client
):
    execution = _create(api_key=api_key).execution
    select = LoseConnection(
        lambda sql: sql.startswith("SELECT") and '"executions_execution"' in sql, times=100
    )
    with connection.execute_wrapper(select):
        response = api_client.get(f"/api/v1/executions/{execution.id}")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "database_unavailable"
    assert response["Retry-After"]
    # The dead connection was dropped with the answer: the next request finds a live one.
    assert api_client.get(f"/api/v1/executions/{execution.id}").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_an_execute_request_absorbs_a_dropped_connection(qa_version, echo_provider, api_client):
    # The connection drops at the idempotency lookup, then again when the answer is read.
    lookup = LoseConnection(lambda sql: sql.startswith("SELECT") and "idempotency_key" in sql)
    reread = LoseConnection(
        lambda sql: sql.startswith("SELECT") and '"executions_execution"."id" IN' in sql
    )
    with connection.execute_wrapper(lookup), connection.execute_wrapper(reread):
        response = api_client.post(
            EXECUTE,
            {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="k1",
        )
    assert (lookup.hits, reread.hits) == (1, 1)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "succeeded"
    assert Execution.objects.count() == 1


# The worker side -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_claim_whose_answer_was_lost_is_still_this_workers(
    qa_version, echo_provider, monkeypatch
):
    monkeypatch.setattr(Conf, "SYNC", False)
    execution = _create().execution
    lose = LoseConnection(updates("executions_execution", "heartbeat_at"), after=True)
    with connection.execute_wrapper(lose):
        claim = execution_claim(execution_id=execution.id)
    assert lose.hits == 1
    assert claim is not None and claim.run == 1
    execution.refresh_from_db()
    assert (execution.status, execution.attempts) == ("running", 1)
    # Another delivery of its task finds nothing to claim.
    assert execution_claim(execution_id=execution.id) is None


@pytest.mark.django_db(transaction=True)
def test_writes_lost_after_the_provider_call_are_retried_not_the_call(qa_version, monkeypatch):
    ProviderFactory(name="scripted")
    monkeypatch.setattr(Conf, "SYNC", False)
    execution = _create(provider="scripted").execution
    claim = execution_claim(execution_id=execution.id)
    lost = [
        # The breaker's record of the call, the attempt row, the final state.
        LoseConnection(updates("providers_circuitbreaker", "window"), after=True),
        LoseConnection(inserts_into("executions_executionattempt"), after=True),
        LoseConnection(updates("executions_execution", "finished_at"), after=True),
    ]
    with (
        connection.execute_wrapper(lost[0]),
        connection.execute_wrapper(lost[1]),
        connection.execute_wrapper(lost[2]),
    ):
        status = execution_process(claim=claim)
    assert [lose.hits for lose in lost] == [1, 1, 1]
    assert status == "succeeded"
    assert len(ScriptedEngine.requests) == 1
    execution.refresh_from_db()
    assert (execution.status, execution.attempts, execution.error_code) == ("succeeded", 1, "")
    assert ExecutionAttempt.objects.filter(execution=execution).count() == 1
    assert CircuitBreaker.objects.get(provider__name="scripted").window


@pytest.mark.django_db(transaction=True)
def test_a_database_gone_for_good_leaves_the_execution_to_the_reaper(
    qa_version, echo_provider, monkeypatch
):
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr("core.db.WORKER_RETRY", RetryPolicy(max_elapsed_s=0.3))
    execution = _create().execution
    claim = execution_claim(execution_id=execution.id)
    lose = LoseConnection(updates("executions_execution", "finished_at"), times=100)
    with connection.execute_wrapper(lose), pytest.raises(OperationalError):
        execution_process(claim=claim)
    execution.refresh_from_db()
    # Not failed with internal_error: still running, for the reaper to take back.
    assert (execution.status, execution.error_code) == ("running", "")


# The reaper and the broker -------------------------------------------------------------------


def _broker_row(execution: Execution) -> OrmQ:
    return next(row for row in OrmQ.objects.all() if row.task_id() == execution.task_id)


def _lock_task(execution: Execution, *, pulled_at, retry_s: float) -> None:
    """As a cluster's pusher does when it pulls the task: lock it until pulled_at + retry."""
    row = _broker_row(execution)
    row.lock = pulled_at + timedelta(seconds=retry_s)
    row.save(update_fields=["lock"])


@pytest.mark.django_db
def test_the_reaper_enqueues_again_what_a_dead_cluster_holds_and_it_runs_once(
    qa_version, echo_provider, clock, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.EXECUTIONS_STALE_AFTER_S = 60
    retry_s = settings.Q_CLUSTER["retry"]
    monkeypatch.setattr(Conf, "SYNC", False)
    with django_capture_on_commit_callbacks(execute=True):
        held, waiting, gone = (_create().execution for _ in range(3))
    Execution.objects.update(queued_at=clock())
    for execution in (held, waiting, gone):
        execution.refresh_from_db()
    # A cluster pulls `held` and dies; `gone` was delivered, and its delivery failed before
    # it could claim the execution (its broker row is deleted); `waiting` waits its turn.
    _lock_task(held, pulled_at=clock(), retry_s=retry_s)
    _broker_row(gone).delete()
    first_tasks = {e.id: e.task_id for e in (held, waiting, gone)}

    clock.advance(59)
    assert execution_reap_stale(now=clock).enqueued == []
    clock.advance(2)  # the stale threshold has passed; well before the lock's own expiry
    with django_capture_on_commit_callbacks(execute=True):
        result = execution_reap_stale(now=clock)
    assert sorted(result.enqueued) == sorted([held.id, gone.id])
    for execution in (held, gone):
        execution.refresh_from_db()
        assert execution.task_id and execution.task_id != first_tasks[execution.id]
    assert OrmQ.objects.count() == 4  # held's old row stays locked; two new ones

    # Every delivery, the dead cluster's one included once its lock expires, runs the
    # execution at most once.
    monkeypatch.setattr(Conf, "SYNC", True)
    outcomes = [execution_run(str(held.id)) for _ in range(2)]
    assert outcomes[1].startswith("not queued any more")
    held.refresh_from_db()
    assert (held.status, held.attempts) == ("succeeded", 1)
    assert ExecutionAttempt.objects.filter(execution=held).count() == 1


@pytest.mark.django_db
def test_the_reaper_leaves_alone_tasks_a_live_cluster_just_pulled(
    qa_version, echo_provider, clock, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.EXECUTIONS_STALE_AFTER_S = 60
    monkeypatch.setattr(Conf, "SYNC", False)
    with django_capture_on_commit_callbacks(execute=True):
        execution = _create().execution
    Execution.objects.update(queued_at=clock())
    execution.refresh_from_db()
    clock.advance(120)
    # Pulled 30 s ago (it waits behind a backlog): the live cluster that holds it will run it.
    _lock_task(
        execution,
        pulled_at=clock() - timedelta(seconds=30),
        retry_s=settings.Q_CLUSTER["retry"],
    )
    assert execution_reap_stale(now=clock).enqueued == []


def test_on_the_redis_broker_a_task_no_longer_in_its_list_is_stranded(monkeypatch):
    # A cluster pops the tasks it pulls off the Redis list: once it is dead, they are gone.
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis server reachable (set TEST_REDIS_URL)")
    # As the settings configure the Redis broker: no ORM, no broker class of the project's.
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)
    monkeypatch.setattr(Conf, "REDIS", url)
    broker = get_broker(list_key="reaper-test")
    broker.delete_queue()
    try:
        broker.enqueue(SignedPackage.dumps({"id": "waiting"}))
        now = timezone.now()
        stranded = broker_stranded_task_ids(
            cluster="reaper-test", task_ids=["waiting", "pulled"], pulled_before=now, now=now
        )
        assert stranded == {"pulled"}
    finally:
        broker.delete_queue()
