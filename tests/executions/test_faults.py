"""Every accepted execution reaches a final state exactly once, whatever breaks: the database's
connections terminated under load, a task cluster SIGKILLed with tasks in hand, an inference
worker SIGKILLed mid-batch, a worker killed on every run, a provider failing 30% of its calls,
one hanging past its timeout, and more work than the workers can take at once.

Real processes on 127.0.0.1 (`manage.py serve`, `qcluster`, gunicorn) on the test database.
The engines count their calls in a file (`tests.support.engines.CountingEngine`), so each test
proves that nothing ran twice. The reaper runs from the test process every half second
(`reaper_running`) instead of once a minute, except in the soak test of `serve` with its
scheduled reaper. Each test has a short version, in the normal suite, and a long one marked
`soak` (`make soak`). Figures are printed (`pytest -s` shows them); times are reported, and only
bounded by what the broker's own lock would have taken.
"""

import os
import re
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from executions.models import Execution, ExecutionAttempt
from executions.services.create import execution_create
from providers.breakers import breaker_get_or_create
from providers.models import CircuitBreaker
from tests.executions.conftest import EXECUTE
from tests.support.engines import (
    COUNTING_ENGINE,
    FLAKY_ENGINE,
    SLOW_ENGINE,
    call_marker,
    engine_calls,
    flaky_fails,
)
from tests.support.factories import ProviderFactory
from tests.support.faults import (
    ConnectionKiller,
    database_url,
    kill_session,
    reaper_running,
    wait_for,
)
from tests.support.servers import free_port

SOAK = pytest.mark.soak
STALE_AFTER_S = 2.0
HEARTBEAT_S = 0.2

pytestmark = [pytest.mark.qcluster, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fault_env(settings, monkeypatch) -> dict[str, str]:
    """What the processes under test get in their environment (on top of `subprocess_env`),
    with the same reaper settings in the test process, whose reaper thread enqueues into their
    broker."""
    settings.EXECUTIONS_STALE_AFTER_S = STALE_AFTER_S
    settings.EXECUTIONS_HEARTBEAT_S = HEARTBEAT_S
    monkeypatch.setattr(Conf, "SYNC", False)
    return {
        "EXECUTIONS_HEARTBEAT_S": str(HEARTBEAT_S),
        "EXECUTIONS_STALE_AFTER_S": str(STALE_AFTER_S),
        "API_KEY_RATE_LIMIT": "100000/min",
    }


@pytest.fixture
def calls_log(tmp_path):
    return tmp_path / "calls.log"


@pytest.fixture
def counting_provider(db, calls_log):
    return ProviderFactory(name="counting", engine_path=COUNTING_ENGINE, model=str(calls_log))


def _inputs(marker: str) -> dict:
    return {"question": f"What is the capital of France? ({marker})", "level": 1}


def _final(ids) -> bool:
    return (
        not Execution.objects.filter(id__in=ids)
        .exclude(status__in=Execution.TERMINAL_STATUSES)
        .exists()
    )


def _wait_final(ids, *, timeout: float, what: str) -> float:
    """Seconds until every execution in `ids` is final."""
    started = time.monotonic()
    wait_for(lambda: _final(ids), timeout=timeout, what=what, every=0.1)
    return time.monotonic() - started


def _succeeded_attempts(execution: Execution) -> int:
    return execution.provider_attempts.filter(outcome=ExecutionAttempt.Outcome.SUCCEEDED).count()


def _report(name: str, **figures) -> None:
    print(f"\n[{name}] " + ", ".join(f"{key}={value}" for key, value in figures.items()))


# Terminated database connections -------------------------------------------------------------


@dataclass
class Submission:
    marker: str
    statuses: list[int] = field(default_factory=list)
    transport_errors: int = 0
    execution_id: str | None = None
    replayed: bool = False


def _submit(client: httpx.Client, url: str, key: str, submission: Submission) -> Submission:
    """POST one async execution, retrying (same Idempotency-Key) after a 503, a 429 (load
    shedding) or a dropped connection, as the README tells clients to."""
    body = {
        "signature": "qa",
        "inputs": _inputs(submission.marker),
        "provider": "counting",
        "mode": "async",
    }
    headers = {"Authorization": f"Api-Key {key}", "Idempotency-Key": submission.marker}
    for _ in range(60):
        try:
            response = client.post(url, json=body, headers=headers, timeout=30)
        except httpx.TransportError:
            submission.transport_errors += 1
            time.sleep(0.1)
            continue
        submission.statuses.append(response.status_code)
        if response.status_code in (429, 503):
            time.sleep(0.1)
            continue
        if response.status_code in (200, 202):
            submission.execution_id = response.json()["id"]
            submission.replayed = response.headers.get("Idempotent-Replayed") == "true"
        return submission
    return submission


def _serve(python, repo_root, env, log_path, port) -> subprocess.Popen:
    """`manage.py serve` restarting its children quickly, its output in `log_path`."""
    return subprocess.Popen(
        [
            python,
            "manage.py",
            "serve",
            "--port",
            str(port),
            "--web-workers",
            "2",
            "--restart-delay",
            "0.2",
            "--stable-after",
            "5",
            "--max-quick-exits",
            "50",
        ],
        cwd=repo_root,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    ("submissions", "kill_every_s"),
    [pytest.param(60, 0.05, id="short"), pytest.param(400, 0.02, id="soak", marks=SOAK)],
)
@pytest.mark.timeout(900)
def test_terminated_database_connections_lose_and_duplicate_nothing(
    qa_version,
    counting_provider,
    calls_log,
    api_key,
    fault_env,
    subprocess_env,
    python,
    repo_root,
    settings,
    tmp_path,
    submissions,
    kill_every_s,
):
    app = "dspy-toolkit-faults"
    env = (
        subprocess_env
        | fault_env
        | {"DATABASE_URL": database_url(settings.DATABASES["default"], application_name=app)}
    )
    port = free_port()
    log = tmp_path / "serve.log"
    serve = _serve(python, repo_root, env, log, port)
    url = f"http://127.0.0.1:{port}{EXECUTE}"
    try:
        wait_for(lambda: "Admin console" in log.read_text(), timeout=120, what="serve")
        work = [Submission(call_marker()) for _ in range(submissions)]
        started = time.monotonic()
        with reaper_running():
            # Every connection of the application's processes (web, both clusters) dies every
            # `kill_every_s` while the requests come in, and the workers run what they can.
            with ConnectionKiller(
                settings_dict=settings.DATABASES["default"],
                application_name=app,
                every_s=kill_every_s,
            ) as killer:
                with httpx.Client() as client, ThreadPoolExecutor(max_workers=8) as pool:
                    list(pool.map(lambda s: _submit(client, url, api_key.raw_key, s), work))
                submitted_s = time.monotonic() - started
            ids = [s.execution_id for s in work if s.execution_id]
            _wait_final(ids, timeout=300, what="the executions after the connection kills")
            done_s = time.monotonic() - started
        statuses = Counter(status for s in work for status in s.statuses)
        _report(
            "database connections terminated",
            submissions=submissions,
            connections_terminated=killer.kills,
            responses=dict(statuses),
            answered_first_time=sum(1 for s in work if s.statuses[:1] in ([202], [200])),
            retried_after_503=sum(1 for s in work if 503 in s.statuses),
            replayed_on_retry=sum(1 for s in work if s.replayed),
            transport_errors=sum(s.transport_errors for s in work),
            submitted_s=round(submitted_s, 1),
            all_final_s=round(done_s, 1),
            restarts=log.read_text().count("restarting it in"),
        )
        assert killer.kills > 0
        # No 500, ever: a 503 at worst, and its retry answers with the same execution.
        assert set(statuses) <= {202, 429, 503}, statuses
        assert all(s.execution_id for s in work), [s for s in work if not s.execution_id]
        executions = {str(e.id): e for e in Execution.objects.all()}
        assert len(executions) == submissions  # nothing lost, nothing created twice
        assert {e.idempotency_key for e in executions.values()} == {s.marker for s in work}
        assert {s.execution_id for s in work} == set(executions)
        assert {e.status for e in executions.values()} == {"succeeded"}
        calls = engine_calls(calls_log)
        assert calls == Counter({s.marker: 1 for s in work}), "an engine call was repeated"
        assert all(_succeeded_attempts(e) == 1 for e in executions.values())
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=60)
            except Exception:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()


# Killed processes ------------------------------------------------------------------------------


def _create_async(markers: list[str], *, provider: str) -> list:
    return [
        execution_create(
            signature="qa", inputs=_inputs(marker), provider=provider, mode="async"
        ).execution.id
        for marker in markers
    ]


def _held_by_a_cluster(ids) -> int:
    """Queued executions whose task a cluster has pulled (locked) and not run."""
    now = timezone.now()
    locked = {SignedPackage.loads(row.payload)["id"] for row in OrmQ.objects.filter(lock__gt=now)}
    return Execution.objects.filter(id__in=ids, status="queued", task_id__in=locked).count()


def _assert_ran_once_each(ids, markers, calls: Counter, *, killed_runs_at_most: int) -> None:
    executions = Execution.objects.in_bulk(ids)
    by_marker = dict(zip(markers, ids, strict=True))
    assert {e.status for e in executions.values()} == {"succeeded"}
    for marker, execution_id in by_marker.items():
        execution = executions[execution_id]
        # One answer recorded, and no more calls than runs (a killed run may have made one).
        assert _succeeded_attempts(execution) == 1, execution
        assert 1 <= calls[marker] <= execution.attempts, (execution, calls[marker])
    repeated = sum(calls.values()) - len(ids)
    assert repeated <= killed_runs_at_most, f"{repeated} calls ran again, not only killed runs"


@pytest.mark.parametrize(
    ("executions", "kills"),
    [pytest.param(24, 1, id="short"), pytest.param(200, 4, id="soak", marks=SOAK)],
)
@pytest.mark.timeout(900)
def test_a_killed_task_cluster_strands_nothing(
    qa_version, counting_provider, calls_log, fault_env, start_cluster, executions, kills
):
    workers = 2
    env = fault_env | {"COUNTING_ENGINE_DELAY_S": "0.2", "Q_WORKERS": str(workers)}
    markers = [call_marker() for _ in range(executions)]
    ids = _create_async(markers, provider="counting")
    cluster = start_cluster(**env)
    held_at_kill = []
    with reaper_running():
        for _ in range(kills):
            calls_before = sum(engine_calls(calls_log).values())
            wait_for(
                lambda b=calls_before: sum(engine_calls(calls_log).values()) >= b + workers,
                timeout=120,
                what="the cluster to work",
            )
            held_at_kill.append(_held_by_a_cluster(ids))
            # The whole cluster at once (main process, sentinel, pusher, workers), as a crash
            # or the OOM killer would; the tasks it pulled stay locked in the broker for
            # `retry` (the timeout + 60 s) after their pull.
            kill_session(cluster)
            killed_at = time.monotonic()
            cluster = start_cluster(**env)
        recovery_s = _wait_final(ids, timeout=120, what="the executions the dead cluster held")
    recovered_after_s = time.monotonic() - killed_at
    calls = engine_calls(calls_log)
    _report(
        "task cluster SIGKILLed",
        executions=executions,
        kills=kills,
        held_by_the_dead_cluster=held_at_kill,
        runs=sum(Execution.objects.filter(id__in=ids).values_list("attempts", flat=True)),
        engine_calls=sum(calls.values()),
        all_final_after_last_kill_s=round(recovered_after_s, 1),
        stale_after_s=STALE_AFTER_S,
        waited_s=round(recovery_s, 1),
    )
    # The dead cluster really held queued work, and it ran long before its broker lock (the
    # task timeout + 60 s, here 360 s) would have let it go.
    assert held_at_kill[0] > 0
    _assert_ran_once_each(ids, markers, calls, killed_runs_at_most=kills * workers)


def _cluster_workers(cluster) -> list[int]:
    """The worker pids of a running cluster, from the stats its sentinel keeps in the cache."""
    from django_q.status import Stat

    return [pid for stat in Stat.get_all() if stat.pid == cluster.pid for pid in stat.workers]


@pytest.mark.parametrize(
    ("executions", "kills"),
    [pytest.param(16, 1, id="short"), pytest.param(120, 4, id="soak", marks=SOAK)],
)
@pytest.mark.timeout(900)
def test_a_killed_inference_worker_loses_and_repeats_nothing(
    qa_version, tiny_model_dir, fault_env, start_cluster, settings, executions, kills
):
    settings.EXECUTIONS_MAX_RUN_ATTEMPTS = kills + 1
    env = fault_env | {
        "PROVIDERS_LOCAL_CONCURRENCY": "4",
        "EXECUTIONS_MAX_RUN_ATTEMPTS": str(kills + 1),
    }
    ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir), max_tokens=16)
    ids = _create_async([call_marker() for _ in range(executions)], provider="tiny")
    cluster = start_cluster(settings.Q_INFERENCE_CLUSTER, **env)
    running_at_kill: list[int] = []
    # (execution, run) pairs a kill interrupted; they stay running until the reaper's turn.
    killed: set[tuple] = set()

    def running_now() -> set[tuple]:
        rows = Execution.objects.filter(id__in=ids, status="running")
        return set(rows.values_list("id", "attempts")) - killed

    with reaper_running():
        for _ in range(kills):
            workers = wait_for(lambda: _cluster_workers(cluster), timeout=120, what="workers")
            wait_for(running_now, timeout=120, what="a batch to run", every=0.01)
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            interrupted = running_now()
            killed |= interrupted
            running_at_kill.append(len(interrupted))
            # The sentinel starts another worker; what the dead one was running goes stale.
            wait_for(
                lambda w=workers: set(_cluster_workers(cluster)) - set(w),
                timeout=60,
                what="a new worker",
            )
        waited_s = _wait_final(ids, timeout=180, what="the executions of the killed worker")
    rows = Execution.objects.filter(id__in=ids)
    _report(
        "inference worker SIGKILLed",
        executions=executions,
        kills=kills,
        running_at_kill=running_at_kill,
        runs=sum(rows.values_list("attempts", flat=True)),
        waited_s=round(waited_s, 1),
    )
    assert set(rows.values_list("status", flat=True)) == {"succeeded"}, list(
        rows.exclude(status="succeeded").values("error_code", "error_message", "attempts")
    )
    for execution in rows:
        # Exactly one recorded provider call, in the run that finished it; MLX calls are not
        # counted by an engine of the tests, the attempt rows are the record.
        attempts = list(execution.provider_attempts.values_list("run", "outcome"))
        assert attempts == [(execution.attempts, "succeeded")], (execution, attempts)
    # Every run a kill interrupted was run again.
    assert len(killed) > 0
    assert sum(rows.values_list("attempts", flat=True)) >= executions + len(killed)


@pytest.mark.parametrize(
    "max_run_attempts", [pytest.param(3, id="short"), pytest.param(2, id="soak", marks=SOAK)]
)
@pytest.mark.timeout(600)
def test_a_worker_killed_on_every_run_fails_after_the_allowed_runs(
    qa_version, fault_env, start_cluster, settings, tmp_path, max_run_attempts
):
    settings.EXECUTIONS_MAX_RUN_ATTEMPTS = max_run_attempts
    release = tmp_path / "release"  # never created: each run blocks until killed
    ProviderFactory(name="slow", engine_path=SLOW_ENGINE, model=str(release))
    started = release.with_suffix(".started")
    [execution_id] = _create_async([call_marker()], provider="slow")
    start_cluster(**fault_env, EXECUTIONS_MAX_RUN_ATTEMPTS=str(max_run_attempts))
    engine_calls_seen = 0
    with reaper_running():
        for _ in range(3):
            try:
                wait_for(started.exists, timeout=30, what="a run to call the engine")
            except AssertionError:
                break  # no run any more: the reaper gave up on it
            os.kill(int(started.read_text()), signal.SIGKILL)
            started.unlink()
            engine_calls_seen += 1
        _wait_final([execution_id], timeout=60, what="the reaper to give up")
    execution = Execution.objects.get(id=execution_id)
    _report(
        "worker killed on every run",
        max_run_attempts=max_run_attempts,
        kills=engine_calls_seen,
        status=execution.status,
        runs=execution.attempts,
    )
    assert (execution.status, execution.error_code) == ("failed", "worker_lost")
    assert execution.attempts == max_run_attempts == engine_calls_seen
    assert not started.exists()


# Failing, hanging and overloaded providers ---------------------------------------------------


@pytest.mark.parametrize(
    "executions", [pytest.param(60, id="short"), pytest.param(600, id="soak", marks=SOAK)]
)
@pytest.mark.timeout(900)
def test_failing_and_hanging_providers_under_overload_finish_each_execution_once(
    qa_version, fault_env, start_cluster, start_openai_server, tmp_path, executions
):
    flaky_log, steady_log = tmp_path / "flaky.log", tmp_path / "steady.log"
    steady = ProviderFactory(name="steady", engine_path=COUNTING_ENGINE, model=str(steady_log))
    flaky = ProviderFactory(
        name="flaky", engine_path=FLAKY_ENGINE, model=str(flaky_log), fallbacks=[steady]
    )
    # Its breaker tolerates the 30%, so that it keeps being called (the hanging provider's
    # breaker keeps the defaults, and opens).
    breaker_get_or_create(provider=flaky)
    CircuitBreaker.objects.filter(provider=flaky).update(failure_rate_threshold=90)
    hanging_server = start_openai_server(mode="slow", delay_s=3.0)
    ProviderFactory(name="hanging", kind="openai", base_url=hanging_server.base_url, timeout_s=0.5)
    # All of it at once, far more than the two workers take: the queue absorbs it.
    hanging_count = executions // 10
    flaky_markers = [call_marker() for _ in range(executions - hanging_count)]
    flaky_ids = _create_async(flaky_markers, provider="flaky")
    hanging_ids = _create_async([call_marker() for _ in range(hanging_count)], provider="hanging")
    start_cluster(**fault_env, Q_WORKERS="2")
    with reaper_running():
        waited_s = _wait_final(flaky_ids + hanging_ids, timeout=600, what="every execution")
    flaky_calls, steady_calls = engine_calls(flaky_log), engine_calls(steady_log)
    flaky_rows = Execution.objects.in_bulk(flaky_ids)
    hanging_rows = Execution.objects.filter(id__in=hanging_ids)
    _report(
        "failing, hanging, overloaded",
        executions=executions,
        flaky_calls=sum(flaky_calls.values()),
        flaky_failures=sum(1 for m in flaky_calls if flaky_fails(m)),
        fallback_calls=sum(steady_calls.values()),
        hanging_requests=len(hanging_server.requests),
        hanging_outcomes=dict(Counter(hanging_rows.values_list("status", flat=True))),
        waited_s=round(waited_s, 1),
    )
    for marker, execution_id in zip(flaky_markers, flaky_ids, strict=True):
        execution = flaky_rows[execution_id]
        # The flaky provider was called at most once (not at all while its breaker was
        # open); the fallback exactly when the flaky one failed or was skipped.
        assert flaky_calls[marker] <= 1
        fell_back = flaky_calls[marker] == 0 or flaky_fails(marker)
        assert steady_calls[marker] == (1 if fell_back else 0), marker
        assert execution.status == "succeeded"
        assert execution.provider.name == ("steady" if fell_back else "flaky")
        assert execution.attempts == 1
    assert sum(1 for m in flaky_markers if flaky_fails(m)) > 0
    # Each hanging execution: one request at most (none once its breaker opened), given up
    # after the provider's timeout.
    called = ExecutionAttempt.objects.filter(
        execution__in=hanging_rows, outcome=ExecutionAttempt.Outcome.FAILED
    ).count()
    assert len(hanging_server.requests) == called > 0
    assert set(hanging_rows.values_list("status", flat=True)) <= {"timed_out", "failed"}
    assert set(hanging_rows.values_list("attempts", flat=True)) == {1}


@SOAK
@pytest.mark.timeout(900)
def test_serve_recovers_what_a_killed_task_cluster_held_with_the_scheduled_reaper(
    qa_version,
    counting_provider,
    calls_log,
    fault_env,
    subprocess_env,
    python,
    repo_root,
    settings,
    tmp_path,
):
    # As in production: `serve` restarts the cluster, the reaper runs on its schedule (every
    # minute), nothing runs from the test process.
    stale_after_s = 10.0
    call_command("executions_install_schedules", stdout=StringIO())
    env = (
        subprocess_env
        | fault_env
        | {
            "EXECUTIONS_STALE_AFTER_S": str(stale_after_s),
            "COUNTING_ENGINE_DELAY_S": "0.2",
            "Q_WORKERS": "2",
        }
    )
    settings.EXECUTIONS_STALE_AFTER_S = stale_after_s
    markers = [call_marker() for _ in range(60)]
    ids = _create_async(markers, provider="counting")
    log = tmp_path / "serve.log"
    serve = _serve(python, repo_root, env, log, free_port())
    try:
        wait_for(lambda: "Admin console" in log.read_text(), timeout=120, what="serve")
        wait_for(lambda: sum(engine_calls(calls_log).values()) >= 4, timeout=120, what="work")
        held = _held_by_a_cluster(ids)
        tasks_pid = int(re.search(r"^started tasks \(pid (\d+)\)$", log.read_text(), re.M)[1])
        os.kill(tasks_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(
            lambda: "restarted (restart 1) tasks" in log.read_text(), timeout=60, what="restart"
        )
        _wait_final(ids, timeout=400, what="the executions the dead cluster held")
        recovered_s = time.monotonic() - killed_at
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    retry_s = settings.Q_CLUSTER["retry"]
    _report(
        "task cluster SIGKILLed under serve, scheduled reaper",
        executions=len(ids),
        held_by_the_dead_cluster=held,
        stale_after_s=stale_after_s,
        reaper_every_s=60,
        all_final_after_kill_s=round(recovered_s, 1),
        broker_lock_would_have_held_s=retry_s,
    )
    assert held > 0
    # Within the stale threshold plus one reaper period (and the scheduler's 30 s tick), not
    # after the broker's lock expired.
    assert recovered_s < retry_s
    _assert_ran_once_each(ids, markers, engine_calls(calls_log), killed_runs_at_most=2)
