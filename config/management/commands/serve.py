import socket
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.supervisor import Child, Options, Plan, exec_supervisor
from core import env
from providers.mlx import blas

# The name `--clusters` knows the task cluster by (its django-q2 name is `default`).
TASKS = "tasks"
NO_CLUSTERS = "none"


class Command(BaseCommand):
    help = (
        "Run the web server (gunicorn) and the django-q2 clusters (tasks and local inference) "
        "together in the foreground; --clusters and --no-web choose what this machine runs. "
        "A child that dies is restarted, after a pause that doubles "
        "with each quick death (reset once it stays up); one that keeps dying, or a web server "
        "that cannot start (say, its port is taken), stops everything with a non-zero exit. "
        "Ctrl-C or SIGTERM stops all of them, and no process is left behind. Every child writes "
        "its Prometheus metrics to PROMETHEUS_MULTIPROC_DIR (default var/prometheus/, emptied "
        "at start when it runs the web server), so /metrics adds up all of them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--clusters",
            help=(
                f"comma-separated django-q2 clusters to run on this machine: {TASKS} and any of "
                f"Q_INFERENCE_CLUSTERS, or {NO_CLUSTERS} (default: all of them)"
            ),
        )
        parser.add_argument(
            "--no-web",
            action="store_true",
            help="run no web server: a machine of workers only",
        )
        parser.add_argument("--host", default=env.get("DSPY_TOOLKIT_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=env.get_int("DSPY_TOOLKIT_PORT", 8000))
        parser.add_argument(
            "--web-workers",
            type=int,
            default=env.get_int("WEB_CONCURRENCY", 2),
            help="gunicorn worker processes",
        )
        parser.add_argument(
            "--web-threads",
            type=int,
            default=env.get_int("WEB_THREADS", 8),
            help=(
                "threads per gunicorn worker: requests served at once by each, a sync execute "
                "holding one while it waits (woken by its execution's notification)"
            ),
        )
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=20.0,
            help="seconds to wait for a graceful stop before killing",
        )
        parser.add_argument(
            "--ready-timeout",
            type=float,
            default=60.0,
            help="seconds the web server has to start listening before serve gives up",
        )
        parser.add_argument(
            "--restart-delay",
            type=float,
            default=1.0,
            help="pause before restarting a child that died; doubles with each quick death",
        )
        parser.add_argument(
            "--max-restart-delay",
            type=float,
            default=30.0,
            help="longest pause before a restart",
        )
        parser.add_argument(
            "--stable-after",
            type=float,
            default=60.0,
            help="seconds a child must stay up for its deaths to stop counting as quick ones",
        )
        parser.add_argument(
            "--max-quick-exits",
            type=int,
            default=5,
            help="quick deaths in a row of one child after which serve stops with an error",
        )

    def handle(
        self,
        *args,
        host: str,
        port: int,
        web_workers: int,
        web_threads: int,
        stop_timeout: float,
        clusters: str | None,
        no_web: bool,
        **opts,
    ):
        cluster_names = self._clusters_chosen(clusters)
        if no_web and not cluster_names:
            raise CommandError(f"nothing to run: --no-web with --clusters {NO_CLUSTERS}")
        if no_web:
            # Nothing here holds a port that would tell whether another serve on this machine
            # uses the metrics directory, so its files stay.
            metrics_directory = Path(settings.METRICS_MULTIPROC_DIR)
            metrics_directory.mkdir(parents=True, exist_ok=True)
        else:
            # Before anything starts: gunicorn would retry for a while and then exit, and a port
            # held by another server would answer the readiness check in its place.
            self._check_port_free(host, port)
            metrics_directory = self._empty_metrics_directory()
        children = self._children_to_run(
            host=host,
            port=port,
            web_workers=web_workers,
            web_threads=web_threads,
            metrics_directory=metrics_directory,
            clusters=cluster_names,
            web=not no_web,
        )
        options = Options(
            stop_timeout=stop_timeout,
            ready_timeout=opts["ready_timeout"],
            restart_delay=opts["restart_delay"],
            max_restart_delay=opts["max_restart_delay"],
            stable_after=opts["stable_after"],
            max_quick_exits=opts["max_quick_exits"],
        )
        # Supervising needs none of Django: this process becomes the standard-library loop
        # of config/supervisor.py (same pid), so it does not hold Django and DSPy meanwhile.
        exec_supervisor(
            Plan(
                children=children,
                options=options,
                web_address=None if no_web else (host, port),
                clusters=cluster_names,
            )
        )

    @staticmethod
    def _clusters_chosen(option: str | None) -> list[str]:
        """The clusters `--clusters` names, in the order given (all of them by default)."""
        known = [TASKS, *settings.Q_INFERENCE_CLUSTERS]
        if option is None:
            return known
        names = [name.strip() for name in option.split(",") if name.strip()]
        if names == [NO_CLUSTERS]:
            return []
        unknown = [name for name in names if name not in known]
        if unknown or not names or len(set(names)) != len(names):
            raise CommandError(
                f"--clusters takes distinct names among {', '.join(known)}, or {NO_CLUSTERS} "
                f"(got {option!r}); inference clusters come from Q_INFERENCE_CLUSTERS"
            )
        return names

    def _children_to_run(
        self,
        *,
        host: str,
        port: int,
        web_workers: int,
        web_threads: int,
        metrics_directory: Path,
        clusters: list[str],
        web: bool,
    ) -> list[Child]:
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        web_argv = [
            python,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            # Its hooks: a dead worker's live gauges are dropped from /metrics.
            "--config",
            "python:config.gunicorn",
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(web_workers),
            "--worker-class",
            "gthread",
            "--threads",
            str(web_threads),
            "--timeout",
            "120",
            "--graceful-timeout",
            "10",
            "--access-logfile",
            "-",
        ]
        # Every child writes its metrics to one directory, and /metrics in any web worker adds
        # them up. prometheus_client picks the mode when it is imported, so it must be in the
        # environment the child starts with.
        base_env = {"PYTHONUNBUFFERED": "1", "PROMETHEUS_MULTIPROC_DIR": str(metrics_directory)}
        children = [Child("web", web_argv, set_env=base_env)] if web else []
        for name in clusters:
            # The task cluster is django-q2's default one: no Q_CLUSTER_NAME, whatever the
            # shell that started serve says.
            if name == TASKS:
                children.append(
                    Child(
                        TASKS,
                        [python, manage, "qcluster"],
                        set_env=base_env,
                        unset_env=["Q_CLUSTER_NAME"],
                    )
                )
                continue
            # The fast BLAS has to be in the inference process before MLX is imported.
            inference_env = base_env | {"Q_CLUSTER_NAME": name} | blas.worker_environment()
            children.append(Child(name, [python, manage, "qcluster"], set_env=inference_env))
        return children

    @staticmethod
    def _empty_metrics_directory() -> Path:
        """The metrics directory, created, without the files of an earlier run's processes
        (whose counters would otherwise add to this run's, and whose pids may be reused).

        Called once the port is known to be free: another serve using the directory would
        hold the port.
        """
        directory = Path(settings.METRICS_MULTIPROC_DIR)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob("*.db"):
                stale.unlink()
        except OSError as exc:
            raise CommandError(f"cannot prepare the metrics directory {directory}: {exc}") from exc
        return directory

    @staticmethod
    def _check_port_free(host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc}") from exc
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As gunicorn binds: a port left in TIME_WAIT by an earlier run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise CommandError(
                    f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server "
                    f"running there? choose another with --port or DSPY_TOOLKIT_PORT)"
                ) from exc
