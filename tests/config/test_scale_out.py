"""Scale-out is more of the same processes sharing PostgreSQL, proven on one machine: two web
servers (`manage.py serve --clusters none`) and two task clusters (`manage.py serve --no-web
--clusters tasks`, as two worker machines would run them) against one database. Executions go
in through both web servers over HTTP; a breaker opened by the failures of calls sent through
one web server refuses the calls sent through the other; one worker machine is SIGKILLed
mid-run (supervisor and cluster at once), and every execution still finishes exactly once.

The engines count their calls across processes (`tests.support.engines.CountingEngine`); the
reaper runs from the test process every half second with a short stale threshold. Figures are
printed (`make scaleout` shows them); the long version is marked `soak`.
"""

import os
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from django.core.management import CommandError, call_command
from django_q.conf import Conf

from executions.models import Execution, ExecutionAttempt
from providers.breakers import breaker_get_or_create
from providers.models import CircuitBreaker
from tests.support.engines import BROKEN_ENGINE, COUNTING_ENGINE, call_marker, engine_calls
from tests.support.factories import ProviderFactory, SignatureVersionFactory
from tests.support.faults import processes_in_session, reaper_running, wait_for
from tests.support.servers import free_port
from tests.support.specs import QA_LEVEL_SPEC

EXECUTE = "/api/v1/dspy/execute"
STALE_AFTER_S = 2.0
HEARTBEAT_S = 0.2
WORKERS = 2


class Machine:
    """One `manage.py serve` standing for a machine: its own metrics directory and log."""

    def __init__(self, name: str, *, args: list[str], python, repo_root, env, tmp_path: Path):
        self.name = name
        self.log = tmp_path / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._output = self.log.open("w")
        self.process = subprocess.Popen(
            [python, "manage.py", "serve", "--port", str(self.port), "--web-workers", "1", *args],
            cwd=repo_root,
            env=env | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"{name}-metrics")},
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, line: str) -> None:
        wait_for(
            lambda: line in self.log.read_text() or self.process.poll() is not None,
            timeout=120,
            what=f"{self.name} to start",
        )
        assert self.process.poll() is None, self.log.read_text()

    def child_pid(self, child: str) -> int:
        """The pid `serve` started `child` with; the child leads a session of its own."""
        for line in self.log.read_text().splitlines():
            if line.startswith(f"started {child} (pid "):
                return int(line.rsplit(" ", 1)[1].rstrip(")"))
        raise AssertionError(f"{self.name} started no {child}: {self.log.read_text()}")

    def lose(self) -> None:
        """SIGKILL the supervisor and every process of its children, as a machine that goes
        away: nothing is restarted, nothing cleans up."""
        for session in [self.process.pid, self.child_pid("tasks")]:
            with suppress(ProcessLookupError):
                os.killpg(session, signal.SIGKILL)
        self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._output.close()


def _submit(client: httpx.Client, url: str, key: str, *, provider: str, marker: str) -> str:
    """POST one async execution (retrying a 429 or 503 with the same Idempotency-Key); its id."""
    body = {
        "signature": "qa",
        "inputs": {"question": f"What is the capital of France? ({marker})", "level": 1},
        "provider": provider,
        "mode": "async",
    }
    headers = {"Authorization": f"Api-Key {key}", "Idempotency-Key": marker}
    for _ in range(100):
        response = client.post(url + EXECUTE, json=body, headers=headers, timeout=30)
        if response.status_code in (429, 503):
            time.sleep(0.1)
            continue
        assert response.status_code == 202, response.text
        return response.json()["id"]
    raise AssertionError(f"{url} kept refusing {marker}")


def _wait_final(ids, *, timeout: float, what: str) -> float:
    started = time.monotonic()
    wait_for(
        lambda: (
            not Execution.objects.filter(id__in=ids)
            .exclude(status__in=Execution.TERMINAL_STATUSES)
            .exists()
        ),
        timeout=timeout,
        what=what,
        every=0.1,
    )
    return time.monotonic() - started


@pytest.fixture
def machines(python, repo_root, subprocess_env, settings, monkeypatch, tmp_path):
    """Two web machines and two worker machines on the test database, the test process's
    reaper reading the same short thresholds."""
    settings.EXECUTIONS_STALE_AFTER_S = STALE_AFTER_S
    settings.EXECUTIONS_HEARTBEAT_S = HEARTBEAT_S
    monkeypatch.setattr(Conf, "SYNC", False)
    env = subprocess_env | {
        "EXECUTIONS_HEARTBEAT_S": str(HEARTBEAT_S),
        "EXECUTIONS_STALE_AFTER_S": str(STALE_AFTER_S),
        "API_KEY_RATE_LIMIT": "100000/min",
        "COUNTING_ENGINE_DELAY_S": "0.3",
        "Q_WORKERS": str(WORKERS),
    }
    started = [
        Machine(name, args=args, python=python, repo_root=repo_root, env=env, tmp_path=tmp_path)
        for name, args in [
            ("web-a", ["--clusters", "none"]),
            ("web-b", ["--clusters", "none"]),
            ("workers-1", ["--no-web", "--clusters", "tasks", "--restart-delay", "0.2"]),
            ("workers-2", ["--no-web", "--clusters", "tasks", "--restart-delay", "0.2"]),
        ]
    ]
    try:
        for machine in started:
            machine.wait_ready("Admin console" if machine.name.startswith("web") else "Clusters:")
        yield {machine.name: machine for machine in started}
    finally:
        for machine in started:
            machine.close()


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "executions",
    [pytest.param(40, id="short"), pytest.param(400, id="soak", marks=pytest.mark.soak)],
)
def test_two_web_servers_and_two_task_clusters_share_one_database(
    machines, api_key, tmp_path, executions
):
    SignatureVersionFactory(signature__name="qa", spec=QA_LEVEL_SPEC)
    calls_log = tmp_path / "calls.log"
    ProviderFactory(name="counting", engine_path=COUNTING_ENGINE, model=str(calls_log))
    failing = ProviderFactory(name="failing", engine_path=BROKEN_ENGINE)
    breaker_get_or_create(provider=failing)
    CircuitBreaker.objects.filter(provider=failing).update(
        minimum_calls=3, sliding_window_size=3, open_duration_s=600
    )
    web_a, web_b = machines["web-a"], machines["web-b"]
    key = api_key.raw_key

    with httpx.Client() as client, ThreadPoolExecutor(max_workers=8) as pool:
        # Breakers are shared: failures of calls sent through one web server (and run by
        # whichever cluster pulled them) open the breaker for calls sent through the other.
        opened = []
        for _ in range(3):
            opened.append(_submit(client, web_a.url, key, provider="failing", marker=call_marker()))
            _wait_final(opened[-1:], timeout=60, what="a failing execution")
        assert CircuitBreaker.objects.get(provider=failing).state == "open"
        refused = [
            _submit(client, web_b.url, key, provider="failing", marker=call_marker())
            for _ in range(3)
        ]
        _wait_final(refused, timeout=60, what="the refused executions")
        refused_rows = Execution.objects.filter(id__in=refused)
        assert set(refused_rows.values_list("error_cause", flat=True)) == {"breaker_open"}
        assert not ExecutionAttempt.objects.filter(
            execution__in=refused_rows, outcome=ExecutionAttempt.Outcome.FAILED
        ).exists()

        # Work through both web servers; one worker machine lost while it runs some.
        markers = [call_marker() for _ in range(executions)]
        via = {marker: (web_a if n % 2 else web_b) for n, marker in enumerate(markers)}
        half = executions // 2
        ids = list(
            pool.map(
                lambda m: _submit(client, via[m].url, key, provider="counting", marker=m),
                markers[:half],
            )
        )
        doomed = machines["workers-1"]
        survivor = machines["workers-2"]
        pids = {
            name: set(processes_in_session(machines[name].child_pid("tasks")))
            for name in ("workers-1", "workers-2")
        }
        with reaper_running():
            wait_for(
                lambda: {int(p) for p in _call_pids(calls_log)} & pids["workers-1"],
                timeout=60,
                what="the doomed machine to run some calls",
            )
            running_at_kill = Execution.objects.filter(id__in=ids, status="running").count()
            doomed.lose()
            killed_at = time.monotonic()
            ids += list(
                pool.map(
                    lambda m: _submit(client, via[m].url, key, provider="counting", marker=m),
                    markers[half:],
                )
            )
            _wait_final(ids, timeout=300, what="every execution after the machine was lost")
            recovered_s = time.monotonic() - killed_at
        pids["workers-2"] |= set(processes_in_session(survivor.child_pid("tasks")))

    calls = engine_calls(calls_log)
    rows = {str(pk): row for pk, row in Execution.objects.in_bulk(ids).items()}
    by_pid = Counter(int(pid) for pid in _call_pids(calls_log))
    print(
        "\n[scale-out] "
        + ", ".join(
            f"{key}={value}"
            for key, value in {
                "executions": executions,
                "via_web_a": sum(1 for m in markers if via[m] is web_a),
                "via_web_b": sum(1 for m in markers if via[m] is web_b),
                "calls_by_workers_1": sum(by_pid[p] for p in pids["workers-1"]),
                "calls_by_workers_2": sum(by_pid[p] for p in pids["workers-2"]),
                "running_at_kill": running_at_kill,
                "runs": sum(row.attempts for row in rows.values()),
                "all_final_after_kill_s": round(recovered_s, 1),
                "stale_after_s": STALE_AFTER_S,
                "breaker_refused_via_web_b": len(refused),
            }.items()
        )
    )
    assert len(rows) == executions
    assert {row.status for row in rows.values()} == {"succeeded"}
    # Exactly one recorded answer each, and an engine call repeated only for a run the lost
    # machine was making when it went.
    for marker, execution_id in zip(markers, ids, strict=True):
        row = rows[execution_id]
        succeeded = row.provider_attempts.filter(outcome=ExecutionAttempt.Outcome.SUCCEEDED)
        assert succeeded.count() == 1, row
        assert 1 <= calls[marker] <= row.attempts, (row, calls[marker])
    assert sum(calls.values()) - executions <= WORKERS
    # Both worker machines did work, and the survivor finished what the lost one left.
    assert sum(by_pid[p] for p in pids["workers-1"]) > 0
    assert sum(by_pid[p] for p in pids["workers-2"]) > 0


def _call_pids(log: Path) -> list[str]:
    """The pid of each call the counting engines logged."""
    if not log.exists():
        return []
    return [line.split()[1] for line in log.read_text().splitlines() if line]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"clusters": "tasks,gpu"}, "--clusters takes distinct names among tasks, inference"),
        ({"clusters": "tasks,tasks"}, "--clusters takes distinct names"),
        ({"clusters": "none", "no_web": True}, "nothing to run"),
    ],
)
def test_serve_refuses_clusters_it_does_not_know_and_an_empty_machine(options, message):
    with pytest.raises(CommandError, match=message):
        call_command("serve", **options)
