"""Smoke run of the quick-start path on the embedded SQLite database, as a new user runs it."""

import os
import re
import signal
import subprocess
import time

from tests.support.faults import processes_in_session
from tests.support.servers import free_port, http_status


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve exited before it answered"
        try:
            if http_status(url) == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout}s")


def test_quick_start_prepares_serves_and_stops_cleanly(python, repo_root, sqlite_env, tmp_path):
    bootstrap = [python, "manage.py", "bootstrap", "--skip-model"]
    first = subprocess.run(
        bootstrap, cwd=repo_root, env=sqlite_env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created admin user 'admin'" in first.stdout
    assert (tmp_path / "var" / "db.sqlite3").exists()

    second = subprocess.run(
        bootstrap, cwd=repo_root, env=sqlite_env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "exists already" in second.stdout

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [python, "manage.py", "serve", "--port", str(port), "--web-workers", "1"],
        cwd=repo_root,
        env=sqlite_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{base}/health/ready", serve)
        assert http_status(f"{base}/admin/login/") == 200
        assert http_status(f"{base}/api/docs/") == 200
        assert http_status(f"{base}/static/admin/css/base.css") == 200
        assert len(processes_in_session(serve.pid)) >= 1
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert f"{base}/admin/" in output
    assert f"{base}/api/docs/" in output
    # Every child ran in a session of its own; none may outlive the supervisor.
    time.sleep(1)
    children = [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", output)]
    assert len(children) == 3
    assert [pid for pid in children if processes_in_session(pid)] == []
