import contextlib
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core import env
from providers.mlx import blas


class Command(BaseCommand):
    help = (
        "Run the web server (gunicorn) and the django-q2 clusters (tasks and local inference) "
        "together in the foreground. Ctrl-C or SIGTERM stops all of them; if one of them dies, "
        "the others are stopped too, so no process is left behind."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=env.get("DSPY_TOOLKIT_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=env.get_int("DSPY_TOOLKIT_PORT", 8000))
        parser.add_argument(
            "--web-workers",
            type=int,
            default=env.get_int("WEB_CONCURRENCY", 2),
            help="gunicorn worker processes",
        )
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=20.0,
            help="seconds to wait for a graceful stop before killing",
        )

    def handle(self, *args, host: str, port: int, web_workers: int, stop_timeout: float, **opts):
        self._children: list[tuple[str, subprocess.Popen]] = []
        self._stopping = False
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._request_stop)
        try:
            self._start(host=host, port=port, web_workers=web_workers)
            base = f"http://{host}:{port}"
            self.stdout.write(self.style.SUCCESS(f"Admin console: {base}/admin/"))
            self.stdout.write(self.style.SUCCESS(f"API docs:      {base}/api/docs/"))
            self.stdout.write("Press Ctrl-C to stop.")
            while not self._stopping:
                for name, process in self._children:
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with code {process.returncode}; stopping")
                        self._stopping = True
                        break
                time.sleep(0.2)
        finally:
            self._stop_all(stop_timeout)

    def _start(self, *, host: str, port: int, web_workers: int) -> None:
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        self._spawn(
            "web",
            [
                python,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"{host}:{port}",
                "--workers",
                str(web_workers),
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                "--timeout",
                "120",
                "--graceful-timeout",
                "10",
                "--access-logfile",
                "-",
            ],
        )
        self._spawn("tasks", [python, manage, "qcluster"])
        # The fast BLAS has to be in the inference process before MLX is imported.
        cluster = settings.Q_INFERENCE_CLUSTER
        inference_env = {"Q_CLUSTER_NAME": cluster} | blas.worker_environment()
        self._spawn(cluster, [python, manage, "qcluster"], inference_env)

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
        child_env = os.environ | {"PYTHONUNBUFFERED": "1"} | (extra_env or {})
        # Own session: a terminal's Ctrl-C reaches only this supervisor, which then stops each
        # child exactly once and in order.
        try:
            process = subprocess.Popen(argv, env=child_env, start_new_session=True)
        except OSError as exc:
            raise CommandError(f"could not start {name}: {exc}") from exc
        self._children.append((name, process))
        self.stdout.write(f"started {name} (pid {process.pid})")

    def _request_stop(self, signum, frame) -> None:
        self._stopping = True

    def _stop_all(self, timeout: float) -> None:
        for _name, process in self._children:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in self._children:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in {timeout:.0f}s; killing it")
            # The child's session may hold processes it forked (workers, monitor): none may
            # outlive the supervisor.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if self._children:
            self.stdout.write("Stopped.")
