"""The process `manage.py serve` becomes once it has worked out what to run: it starts the web
server and the clusters, restarts one that dies, and stops them all on Ctrl-C or SIGTERM.

It imports nothing but the standard library. `serve` needs Django (settings, the clusters
configured, the metrics directory), but holding Django, DRF and DSPy for as long as the
service runs would cost this process some 100 MB of its own, for a loop that only waits on
its children. So serve `exec`s this file with its plan in `PLAN_VARIABLE` (what each child
runs and which variables it changes: no values of the environment itself, which every child
inherits), keeping its pid, its terminal and its standard streams.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

PLAN_VARIABLE = "DSPY_TOOLKIT_SERVE_PLAN"
# The green of Django's SUCCESS style, and its reset: the messages serve printed green before it
# exec'd this loop stay green (on a terminal only).
_GREEN, _RESET = "\033[32;1m", "\033[0m"


class SupervisorError(Exception):
    """Stops everything; the message is printed and serve exits 1."""


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    name: str
    argv: list[str]
    # Variables set for this child on top of the environment, and those removed from it.
    set_env: dict[str, str] = field(default_factory=dict)
    unset_env: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    # Exits in a row that came before the child had been up for `stable_after` seconds.
    quick_exits: int = 0
    restart_at: float | None = None
    restarts: int = 0

    def environment(self) -> dict[str, str]:
        # `main` has taken the plan out of the environment already.
        base = {key: value for key, value in os.environ.items() if key not in self.unset_env}
        return base | self.set_env


@dataclass(frozen=True)
class Options:
    stop_timeout: float
    ready_timeout: float
    restart_delay: float
    max_restart_delay: float
    stable_after: float
    max_quick_exits: int


@dataclass(frozen=True)
class Plan:
    children: list[Child]
    options: Options
    # The web server's address, or None for a machine of workers only.
    web_address: tuple[str, int] | None
    clusters: list[str]

    def to_json(self) -> str:
        return json.dumps(
            {
                "children": [
                    {"name": c.name, "argv": c.argv, "set_env": c.set_env, "unset_env": c.unset_env}
                    for c in self.children
                ],
                "options": self.options.__dict__,
                "web_address": self.web_address,
                "clusters": self.clusters,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        data = json.loads(text)
        return cls(
            children=[Child(**child) for child in data["children"]],
            options=Options(**data["options"]),
            web_address=tuple(data["web_address"]) if data["web_address"] else None,
            clusters=data["clusters"],
        )


def exec_supervisor(plan: Plan) -> None:
    """Replace this process with the supervisor of `plan` (does not return)."""
    sys.stdout.flush()
    sys.stderr.flush()
    environment = os.environ | {PLAN_VARIABLE: plan.to_json()}
    # By its path, so that it runs from any working directory; it imports only the standard
    # library, which nothing in this folder shadows.
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)], environment)  # noqa: S606


class Supervisor:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.options = plan.options
        self.children = plan.children
        self.stopping = False

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._request_stop)
        try:
            for child in self.children:
                self._spawn(child)
            if self.plan.web_address is None:
                _say(f"Clusters: {', '.join(self.plan.clusters)}", success=True)
            else:
                host, port = self.plan.web_address
                if not self._wait_until_listening(host, port):
                    return 0
                base = f"http://{host}:{port}"
                _say(f"Admin console: {base}/admin/", success=True)
                _say(f"API docs:      {base}/api/docs/", success=True)
            _say("Press Ctrl-C to stop.")
            while not self.stopping:
                self._supervise()
                time.sleep(0.2)
            return 0
        except SupervisorError as error:
            print(f"CommandError: {error}", file=sys.stderr, flush=True)
            return 1
        finally:
            self._stop_all()

    def _wait_until_listening(self, host: str, port: int) -> bool:
        """True once the web server accepts connections; False when asked to stop first;
        SupervisorError when it died or did not listen in time."""
        web = self.children[0]
        deadline = time.monotonic() + self.options.ready_timeout
        while not self.stopping:
            code = web.process.poll()
            if code is not None:
                raise SupervisorError(f"the web server exited with code {code} before it listened")
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
                return True
            if time.monotonic() > deadline:
                raise SupervisorError(
                    f"the web server did not listen on {host}:{port} in "
                    f"{self.options.ready_timeout:g}s"
                )
            time.sleep(0.2)
        return False

    def _supervise(self) -> None:
        """Restart each child that died, once its pause is over; give up on one that keeps
        dying quickly."""
        now = time.monotonic()
        options = self.options
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    child.restarts += 1
                    self._spawn(child, restart=True)
                continue
            code = child.process.poll()
            if code is None:
                continue
            _kill_session(child)
            uptime = now - child.started_at
            quick = uptime < options.stable_after
            child.quick_exits = child.quick_exits + 1 if quick else 1
            if child.quick_exits > options.max_quick_exits:
                raise SupervisorError(
                    f"{child.name} exited {child.quick_exits} times in a row within "
                    f"{options.stable_after:g}s of starting (last exit code {code}); "
                    f"stopping everything"
                )
            delay = min(
                options.restart_delay * 2 ** (child.quick_exits - 1), options.max_restart_delay
            )
            print(
                f"{child.name} (pid {child.process.pid}) exited with code {code} after "
                f"{uptime:.1f}s; restarting it in {delay:g}s",
                file=sys.stderr,
                flush=True,
            )
            child.restart_at = now + delay

    def _spawn(self, child: Child, *, restart: bool = False) -> None:
        # Own session: a terminal's Ctrl-C reaches only this supervisor, which then stops each
        # child exactly once and in order.
        try:
            child.process = subprocess.Popen(
                child.argv, env=child.environment(), start_new_session=True
            )
        except OSError as exc:
            raise SupervisorError(f"could not start {child.name}: {exc}") from exc
        child.started_at = time.monotonic()
        verb = f"restarted (restart {child.restarts})" if restart else "started"
        _say(f"{verb} {child.name} (pid {child.process.pid})")

    def _request_stop(self, signum, frame) -> None:
        self.stopping = True

    def _stop_all(self) -> None:
        timeout = self.options.stop_timeout
        running = [child for child in self.children if child.process is not None]
        for child in running:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(
                    f"{child.name} did not stop in {timeout:.0f}s; killing it",
                    file=sys.stderr,
                    flush=True,
                )
            _kill_session(child)
            child.process.wait()
        if running:
            restarts = ", ".join(f"{c.name} {c.restarts}" for c in running if c.restarts)
            _say(f"Stopped (restarts: {restarts})." if restarts else "Stopped.")


def _kill_session(child: Child) -> None:
    # The child's session may hold processes it forked (workers, monitor): none may outlive
    # it, or a restarted cluster would run beside its predecessor's orphans.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signal.SIGKILL)


def _say(message: str, *, success: bool = False) -> None:
    if success and sys.stdout.isatty():
        message = f"{_GREEN}{message}{_RESET}"
    print(message, flush=True)


def main() -> int:
    text = os.environ.pop(PLAN_VARIABLE, None)
    if text is None:
        print(f"{__name__}: run by `manage.py serve`, which sets {PLAN_VARIABLE}", file=sys.stderr)
        return 2
    return Supervisor(Plan.from_json(text)).run()


if __name__ == "__main__":
    sys.exit(main())
