"""The service as a benchmark meets it: `manage.py bootstrap` and `manage.py serve` in a fresh
var directory, on a free port of 127.0.0.1, stopped (with every child) at the end.

`source` is the checkout to run (this one by default; a `git worktree` of an earlier commit
for a before/after comparison from one run), with this checkout's interpreter. The default
model is linked from this checkout's var/models, so nothing is installed twice. `env` adds or
overrides variables: DATABASE_URL for PostgreSQL (SQLite otherwise, as the quick start),
REDIS_URL for the Redis broker. This checkout's root follows `source` on the PYTHONPATH, so an
earlier checkout's processes still import the benchmarks' own modules (`bench.fast_engine`).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """The quick start's service in a fresh var directory."""

    def __init__(
        self,
        var_dir: Path,
        *,
        source: Path = REPO_ROOT,
        env: dict[str, str] | None = None,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        self.var_dir = var_dir
        self.source = source
        self.serve_args = serve_args
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        models = REPO_ROOT / "var" / "models"
        (var_dir / "models").symlink_to(models, target_is_directory=True)
        base_env = {key: value for key, value in os.environ.items()}
        base_env.pop("DATABASE_URL", None)
        base_env.pop("REDIS_URL", None)
        self.env = (
            base_env
            | {
                "DJANGO_SETTINGS_MODULE": "config.settings.local",
                "DSPY_TOOLKIT_VAR_DIR": str(var_dir),
                "DJANGO_SUPERUSER_PASSWORD": "bench-service",
                "PYTHONUNBUFFERED": "1",
                # The checkout under test first, not this one, for a before/after run; this
                # one after it for the benchmarks' modules (`bench` is a namespace package).
                "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(source), str(REPO_ROOT)])),
            }
            | (env or {})
        )
        self.process: subprocess.Popen | None = None

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.source,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def shell(self, code: str, *, timeout_s: float = 600.0) -> str:
        """Run Python `code` in `manage.py shell` of the checkout under test; its stdout."""
        return subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
            cwd=self.source,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        ).stdout

    def start(self, *, bootstrap: bool = True, timeout_s: float = 180.0) -> float:
        """Bootstrap and serve; the seconds serve took to be ready (/readyz 200)."""
        if bootstrap:
            self.manage("bootstrap")
        started = time.monotonic()
        log = open(self.var_dir / "serve.log", "w")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(self.port), *self.serve_args],
            cwd=self.source,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: see {self.var_dir / 'serve.log'}")
            time.sleep(0.5)
        raise RuntimeError(f"the service did not become ready within {timeout_s:.0f} s")

    def api_key(self, name: str = "bench") -> str:
        return api_key_from_output(self.manage("executions_create_api_key", name))

    def pids(self) -> list[int]:
        """serve and every process below it."""
        if self.process is None:
            return []
        found, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            parent = frontier.pop()
            children = Path(f"/proc/{parent}/task/{parent}/children")
            try:
                kids = [int(pid) for pid in children.read_text().split()]
            except OSError:
                continue
            found += kids
            frontier += kids
        return found

    def stop(self) -> None:
        """Stop serve (which stops its children); any child still there after it is killed,
        so that no process of one benchmark lingers into the next."""
        if self.process is None or self.process.poll() is not None:
            return
        children = {pid: _started(pid) for pid in self.pids()[1:]}
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for pid, started in children.items():
            # The same process (its start time), not another that got its pid since.
            if started is not None and _started(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def _started(pid: int) -> int | None:
    """When a process started (clock ticks since boot), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def api_key_from_output(output: str) -> str:
    """The key that `executions_create_api_key` printed (the one line that is only the key)."""
    return next(
        line.strip()
        for line in output.splitlines()
        if line.strip() and "." in line and " " not in line.strip()
    )


def execute(
    base: str, key: str, signature: str, inputs: dict, *, extra: dict | None = None
) -> tuple[dict, float]:
    """One sync `POST /api/v1/dspy/execute`: the answer and its milliseconds."""
    body = json.dumps({"signature": signature, "inputs": inputs, **(extra or {})}).encode()
    request = urllib.request.Request(  # noqa: S310 (a local URL)
        f"{base}/api/v1/dspy/execute",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Api-Key {key}"},
        method="POST",
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310
            payload = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        payload = json.loads(error.read() or b"{}")
    return payload, (time.perf_counter() - started) * 1000
