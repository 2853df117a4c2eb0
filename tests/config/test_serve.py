"""`manage.py serve` supervising real processes on 127.0.0.1: a child that dies is restarted
(and reported) while the others go on; one that keeps dying, or a port already taken, stops
everything with a non-zero exit; SIGTERM stops all, leaving no process behind."""

import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import mlx.core as mx
import pytest
from django_q.conf import Conf
from django_q.models import Success
from django_q.tasks import async_task

from tests.support.engines import ECHO_ENGINE, INPUT_TOKENS
from tests.support.factories import APIKeyFactory, ProviderFactory, SignatureVersionFactory
from tests.support.faults import processes_in_session, wait_for
from tests.support.metrics import Scrape, scrape_url
from tests.support.servers import free_port, http_status
from tests.support.specs import QA_LEVEL_INPUTS, QA_LEVEL_SPEC


def _pids(log: Path, verb: str) -> dict[str, list[int]]:
    """The pids each child was started (`started`) or restarted (`restarted`) with, in order."""
    prefix = r"started" if verb == "started" else r"restarted \(restart \d+\)"
    pattern = rf"^{prefix} (\w+) \(pid (\d+)\)$"
    found: dict[str, list[int]] = {}
    for name, pid in re.findall(pattern, log.read_text(), flags=re.MULTILINE):
        found.setdefault(name, []).append(int(pid))
    return found


class Serve:
    """`manage.py serve` on a free port, its output in a log file."""

    def __init__(self, *, python, repo_root, env, tmp_path: Path, args: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        self._output = self.log.open("w")
        self.process = subprocess.Popen(
            [python, "manage.py", "serve", "--port", str(self.port), "--web-workers", "1", *args],
            cwd=repo_root,
            env=env,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text()

    def wait_ready(self) -> dict[str, int]:
        wait_for(
            lambda: "Admin console" in self.text() or self.process.poll() is not None,
            timeout=120,
            what="serve to print its URLs",
        )
        assert self.process.poll() is None, self.text()
        return {name: pids[0] for name, pids in _pids(self.log, "started").items()}

    def every_pid(self) -> list[int]:
        pids = _pids(self.log, "started")
        for name, more in _pids(self.log, "restarted").items():
            pids[name] = pids.get(name, []) + more
        return [pid for group in pids.values() for pid in group]

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._output.close()


@pytest.fixture
def start_serve(python, repo_root, subprocess_env, tmp_path):
    started: list[Serve] = []

    def start(*args: str, **env: str) -> Serve:
        """`env` adds to the environment serve starts with."""
        serve = Serve(
            python=python,
            repo_root=repo_root,
            env=subprocess_env | env,
            tmp_path=tmp_path,
            args=args,
        )
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.close()
        # Every child ran in a session of its own; none may outlive the supervisor.
        leftovers = {pid: processes_in_session(pid) for pid in serve.every_pid()}
        assert not any(leftovers.values()), leftovers


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_a_dead_cluster_is_restarted_while_the_rest_keeps_serving(start_serve, monkeypatch):
    serve = start_serve("--restart-delay", "0.2", "--stable-after", "2")
    pids = serve.wait_ready()
    assert set(pids) == {"web", "tasks", "inference"}
    assert http_status(f"{serve.base}/health/live") == 200
    # serve supervises as the standard-library loop it exec'd, in its own pid: no Django, no
    # DSPy held for as long as the service runs (they are over 100 MB).
    command = Path(f"/proc/{serve.process.pid}/cmdline").read_bytes().split(b"\0")
    assert command[1].endswith(b"config/supervisor.py"), command
    maps = Path(f"/proc/{serve.process.pid}/maps").read_text()
    assert "site-packages" not in maps, "serve still maps a package's native code"

    # Only the cluster's main process: its sentinel and workers are left as orphans, which
    # the supervisor must clear before it starts a new cluster beside them.
    os.kill(pids["tasks"], signal.SIGKILL)
    restarted = wait_for(
        lambda: _pids(serve.log, "restarted").get("tasks"), timeout=60, what="the restart"
    )[0]
    assert f"tasks (pid {pids['tasks']}) exited with code -9" in serve.text()
    assert processes_in_session(pids["tasks"]) == []
    # The web server and the other cluster were left alone.
    assert http_status(f"{serve.base}/health/live") == 200
    assert processes_in_session(pids["web"]) and processes_in_session(pids["inference"])
    assert "restarted" not in "".join(
        line for line in serve.text().splitlines() if "web" in line or "inference" in line
    )

    # The new cluster takes work.
    monkeypatch.setattr(Conf, "SYNC", False)
    task_id = async_task("math.hypot", 3, 4)
    wait_for(lambda: Success.objects.filter(id=task_id).exists(), timeout=60, what="the task")
    assert processes_in_session(restarted)

    serve.process.send_signal(signal.SIGTERM)
    assert serve.process.wait(timeout=60) == 0
    assert "Stopped (restarts: tasks 1)." in serve.text()


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_a_child_that_keeps_dying_stops_everything_with_an_error(start_serve):
    serve = start_serve("--restart-delay", "0.2", "--stable-after", "600", "--max-quick-exits", "1")
    pids = serve.wait_ready()
    os.kill(pids["inference"], signal.SIGKILL)
    again = wait_for(
        lambda: _pids(serve.log, "restarted").get("inference"), timeout=60, what="the restart"
    )[0]
    os.kill(again, signal.SIGKILL)
    assert serve.process.wait(timeout=60) == 1
    assert "inference exited 2 times in a row" in serve.text()


def test_serve_exits_with_an_error_when_its_port_is_taken(python, repo_root, subprocess_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(
            [python, "manage.py", "serve", "--port", str(port)],
            cwd=repo_root,
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert completed.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in completed.stderr
    assert "Admin console" not in completed.stdout
    assert "started" not in completed.stdout


# Metrics across processes ---------------------------------------------------------------------

SCRAPE_TOKEN = "scrape-token"


def _count_stale_executions(python, repo_root, directory: Path) -> None:
    """Leave the files of an earlier run's process in the metrics directory."""
    subprocess.run(
        [
            python,
            "-c",
            "from monitoring import prometheus; prometheus.executions_total.labels("
            "signature='qa', version='1', provider='echo', status='succeeded', cause='').inc(100)",
        ],
        cwd=repo_root,
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
        check=True,
    )
    assert list(directory.glob("counter_*.db"))


def _execute(base: str, key: str) -> dict:
    request = urllib.request.Request(  # noqa: S310 (local URL)
        f"{base}/api/v1/dspy/execute",
        data=json.dumps(
            {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo"}
        ).encode(),
        headers={"Authorization": f"Api-Key {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (local URL)
        return json.loads(response.read())


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_metrics_counted_in_workers_add_up_on_every_web_worker(
    start_serve, python, repo_root, subprocess_env, tmp_path, tiny_model_dir
):
    SignatureVersionFactory(signature__name="qa", spec=QA_LEVEL_SPEC)
    ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    # The inference worker loads it as it starts (the warm-up).
    ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir))
    key = APIKeyFactory(name="client").raw_key
    directory = tmp_path / "prometheus"
    directory.mkdir()
    _count_stale_executions(python, repo_root, directory)
    serve = start_serve(
        "--web-workers",
        "2",
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        # Only the token opens /metrics: the test's own address is not allowed.
        METRICS_ALLOWED_ADDRESSES="192.0.2.1",
        METRICS_BEARER_TOKEN=SCRAPE_TOKEN,
    )
    serve.wait_ready()
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape_url(f"{serve.base}/metrics")
    assert refused.value.code == 403

    answers = [_execute(serve.base, key) for _ in range(3)]
    assert [answer["status"] for answer in answers] == ["succeeded"] * 3

    # The cluster's worker counted the executions, the web workers the requests: each scrape,
    # whichever web worker answers it, adds up every process (and not the earlier run's files).
    echo = {"signature": "qa", "version": "1", "provider": "echo"}
    succeeded = {**echo, "status": "succeeded"}
    attempts = {**echo, "pool": "", "outcome": "succeeded", "error_code": ""}
    for _ in range(6):
        page = scrape_url(f"{serve.base}/metrics", token=SCRAPE_TOKEN)
        assert page.value("dspy_toolkit_executions_total", **succeeded, cause="") == 3
        assert page.value("dspy_toolkit_execution_duration_seconds_count", **succeeded) == 3
        assert (
            page.value("dspy_toolkit_tokens_total", **echo, direction="input") == 3 * INPUT_TOKENS
        )
        assert page.value("dspy_toolkit_provider_attempts_total", **attempts) == 3
        assert page.value("django_http_requests_total_by_method_total", method="POST") == 3
        assert page.value("dspy_toolkit_queue_depth", cluster="default") == 0
        assert page.value("dspy_toolkit_breaker_state", provider="echo") == 0

    model = {"model": tiny_model_dir.name}

    def loaded() -> Scrape | None:
        page = scrape_url(f"{serve.base}/metrics", token=SCRAPE_TOKEN)
        return page if page.value("dspy_toolkit_model_load_seconds_count", **model) else None

    page = wait_for(loaded, timeout=120, what="the inference worker to load the tiny model")
    assert page.value("dspy_toolkit_model_load_seconds_count", **model) == 1
    assert page.value("dspy_toolkit_model_resident_bytes", **model) == sum(
        array.nbytes for array in mx.load(str(tiny_model_dir / "model.safetensors")).values()
    )

    # A one-shot command's counters outlive it.
    subprocess.run(
        [python, "manage.py", "providers_breaker", "echo", "--force-open"],
        cwd=repo_root,
        env=subprocess_env | {"PROMETHEUS_MULTIPROC_DIR": str(directory)},
        check=True,
        capture_output=True,
    )
    page = scrape_url(f"{serve.base}/metrics", token=SCRAPE_TOKEN)
    transition = {"provider": "echo", "from_state": "closed", "to_state": "open"}
    assert page.value("dspy_toolkit_breaker_transitions_total", **transition) == 1
    assert page.value("dspy_toolkit_breaker_state", provider="echo") == 2

    serve.process.send_signal(signal.SIGTERM)
    assert serve.process.wait(timeout=60) == 0
