"""The service's processes reporting themselves: who runs, how much memory, which models.

Each long-running process of the service writes its own `ServiceProcess` row from one
background thread, every `MONITORING_PROCESS_HEARTBEAT_S` seconds (an upsert on host, pid and
start time). Which processes report is decided once, when Django starts in them:

- a gunicorn worker (gunicorn imported the application: `gunicorn` is loaded) or the
  development server's serving process: `web`;
- the main process of `manage.py qcluster`: `cluster`, and each django-q2 worker it forks
  (`post_spawn`, sent inside the worker): `worker`, both with the cluster's name. The
  sentinel, monitor and pusher processes django-q2 forks beside the workers hold no models
  and run no tasks; they are not reported (django-q2's own cluster status covers them);
- nothing else: `migrate`, `shell`, `executions_execute`, test runs and every other one-shot
  command end soon and would only leave rows of processes that are gone.

A row whose heartbeat is older than `MONITORING_PROCESS_STALE_AFTER_S` is a process that is
gone; every beat also deletes rows silent for longer than `FORGET_AFTER`.
"""

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet
from django.dispatch import receiver
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.signals import post_spawn
from django_q.status import Stat

from core.db import RetryPolicy, db_retry
from monitoring.models import ProcessRole, ServiceProcess

logger = logging.getLogger(__name__)

# Rows of processes silent for this long are deleted: a day keeps last night's crash readable.
FORGET_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    pid: int
    started_at: datetime
    role: str
    cluster: str = ""


def _command() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else ""


def process_role() -> tuple[str, str] | None:
    """(role, cluster) of this process when it is a long-running service process at start-up
    (see the module's docstring), else None. Workers are told apart later, by `post_spawn`."""
    if "gunicorn" in sys.modules:
        return ProcessRole.WEB, ""
    command = _command()
    if command == "qcluster":
        return ProcessRole.CLUSTER, Conf.CLUSTER_NAME
    # The autoreloader's parent only watches files; its child (RUN_MAIN) serves.
    if command == "runserver" and (
        os.environ.get("RUN_MAIN") == "true" or "--noreload" in sys.argv
    ):
        return ProcessRole.WEB, ""
    return None


def process_rss_bytes() -> int | None:
    """This process's resident memory now (Linux), else its peak (other systems)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Kilobytes on Linux, bytes on macOS.
    return peak if sys.platform == "darwin" else peak * 1024


def process_loaded_models() -> list[dict]:
    """The local models this process holds. The MLX runtime is looked up, not imported: a
    process that never imported it holds no model, and importing MLX (and its BLAS) into every
    web worker just to say so would cost each of them memory."""
    runtime = sys.modules.get("providers.mlx.runtime")
    if runtime is None:
        return []
    return [
        {
            "path": info.path,
            "load_duration_s": round(info.load_duration_s, 3),
            "requests_served": info.requests_served,
            "largest_batch": info.largest_batch,
            "prefix_cache_hits": info.prefix_cache_hits,
            "prefix_cache_misses": info.prefix_cache_misses,
            "prefix_cache_entries": info.prefix_cache_entries,
            "prefix_cache_bytes": info.prefix_cache_bytes,
        }
        for info in runtime.loaded_models()
    ]


@transaction.atomic
def service_process_report(
    *, identity: ProcessIdentity, now: datetime, rss_bytes: int | None, loaded_models: list[dict]
) -> None:
    """Write one heartbeat of a process: its row is inserted, or updated when it exists (one
    statement, so concurrent beats never collide), and rows silent past FORGET_AFTER go."""
    ServiceProcess.objects.bulk_create(
        [
            ServiceProcess(
                host=identity.host,
                pid=identity.pid,
                started_at=identity.started_at,
                role=identity.role,
                cluster=identity.cluster,
                heartbeat_at=now,
                rss_bytes=rss_bytes,
                loaded_models=loaded_models,
            )
        ],
        update_conflicts=True,
        unique_fields=["host", "pid", "started_at"],
        update_fields=["heartbeat_at", "rss_bytes", "loaded_models"],
    )
    ServiceProcess.objects.filter(heartbeat_at__lt=now - FORGET_AFTER).delete()


def service_process_alive_since(*, now: datetime) -> datetime:
    """Processes whose heartbeat is at or after this moment count as alive."""
    return now - timedelta(seconds=settings.MONITORING_PROCESS_STALE_AFTER_S)


def service_process_list() -> QuerySet[ServiceProcess]:
    return ServiceProcess.objects.order_by("role", "cluster", "host", "pid")


def service_process_clusters_alive(*, clusters: list[str], now: datetime) -> dict[str, bool]:
    """For each django-q2 cluster name, whether one of its workers reported recently (one
    query): a worker, not the cluster's main process, since only workers run tasks."""
    alive = set(
        ServiceProcess.objects.filter(
            role=ProcessRole.WORKER,
            cluster__in=clusters,
            heartbeat_at__gte=service_process_alive_since(now=now),
        ).values_list("cluster", flat=True)
    )
    return {name: name in alive for name in clusters}


class ProcessReporter:
    """The one reporting thread of this process."""

    def __init__(self, identity: ProcessIdentity) -> None:
        self.identity = identity
        self.thread = threading.Thread(target=self._run, name="process-reporter", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def beat(self) -> None:
        # A beat is worth a few tries on a new connection, but not longer than till the next.
        policy = RetryPolicy(max_elapsed_s=settings.MONITORING_PROCESS_HEARTBEAT_S)
        db_retry(
            lambda: service_process_report(
                identity=self.identity,
                now=timezone.now(),
                rss_bytes=process_rss_bytes(),
                loaded_models=process_loaded_models(),
            ),
            policy=policy,
        )

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except DatabaseError:
                # Not migrated yet, or the database is away: the next beat tries again, and a
                # process that cannot report shows as gone, which is the truth that matters.
                logger.warning("Process %s could not report itself", self.identity.pid)
            except Exception:
                # Whatever else went wrong, the thread lives on: a dead reporter would make a
                # healthy process look gone (and the service unready) for good.
                logger.exception("Process %s could not report itself", self.identity.pid)
            finally:
                # No connection held between beats: a process forked meanwhile (django-q2
                # forks its workers) must not inherit an open one.
                connection.close()
            time.sleep(settings.MONITORING_PROCESS_HEARTBEAT_S)


_reporter: ProcessReporter | None = None
_reporter_lock = threading.Lock()


def _forget_after_fork() -> None:
    # The thread does not survive a fork; a forked child that is a service process (a
    # django-q2 worker) starts its own reporter with its own pid.
    global _reporter, _reporter_lock
    _reporter = None
    _reporter_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def process_reporter_start(*, role: str, cluster: str = "") -> ProcessReporter:
    """Start this process's reporter (once: later calls return the running one)."""
    global _reporter
    with _reporter_lock:
        if _reporter is None:
            identity = ProcessIdentity(
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=timezone.now(),
                role=role,
                cluster=cluster,
            )
            _reporter = ProcessReporter(identity)
            _reporter.start()
        return _reporter


def process_reporter_start_if_service() -> None:
    """Called when Django starts in a process: report it if it is a service process."""
    found = process_role()
    if found is not None:
        role, cluster = found
        process_reporter_start(role=role, cluster=cluster)


@receiver(post_spawn, dispatch_uid="monitoring.report_worker")
def report_worker_on_spawn(sender, proc_name: str, **kwargs) -> None:
    # Only in a worker that `manage.py qcluster` forked: django-q2 also sends this when it
    # runs a task inline (`sync`), in whichever process enqueued it, and that is no worker.
    if _command() == "qcluster":
        process_reporter_start(role=ProcessRole.WORKER, cluster=Conf.CLUSTER_NAME)


@dataclass(frozen=True)
class ClusterStatus:
    """One running django-q2 cluster as django-q2 itself reports it (its shared-cache stat,
    refreshed every few seconds by the cluster's sentinel)."""

    cluster: str
    host: str
    pid: int
    status: str
    workers: int
    reincarnations: int
    uptime_s: float


@dataclass(frozen=True)
class QueueSize:
    cluster: str
    # Tasks waiting for a worker, and tasks a cluster has pulled but not finished.
    waiting: int
    pulled: int | None


def cluster_status_list() -> list[ClusterStatus]:
    """The clusters running now (django-q2's `Stat`, kept in the shared cache), each named by
    the main process's row (the stat knows only the process, not the cluster's name)."""
    stats = Stat.get_all()
    names = {
        (row.host, row.pid): row.cluster
        for row in ServiceProcess.objects.filter(
            role=ProcessRole.CLUSTER, pid__in=[stat.pid for stat in stats]
        ).only("host", "pid", "cluster")
    }
    return sorted(
        (
            ClusterStatus(
                cluster=names.get((stat.host, stat.pid), "?"),
                host=stat.host,
                pid=stat.pid,
                status=str(stat.status),
                workers=len(stat.workers),
                reincarnations=stat.reincarnations,
                uptime_s=stat.uptime() if stat.tob else 0.0,
            )
            for stat in stats
        ),
        key=lambda status: (status.cluster, status.host, status.pid),
    )


def queue_size_list() -> list[QueueSize]:
    """What waits in the broker for each of the service's clusters (a query or two each)."""
    names = [settings.Q_CLUSTER.get("name", "default"), *settings.Q_INFERENCE_CLUSTERS]
    sizes = []
    for name in names:
        broker = get_broker(list_key=name)
        # The Redis broker does not know what was pulled (None).
        sizes.append(
            QueueSize(cluster=name, waiting=broker.queue_size(), pulled=broker.lock_size())
        )
    return sizes
