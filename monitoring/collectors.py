"""What `/metrics` reads when it is scraped: the database's state, and the live processes.

Breaker states and queue depths change in whichever process records a call or takes a task, so
they are read from the database at scrape time (two bounded queries), which is right whoever
changed them. The other metrics come from the processes that counted them
(`monitoring.prometheus`).
"""

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from django.db import DatabaseError
from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import mark_process_dead

from monitoring.prometheus import NAMESPACE
from monitoring.selectors import execution_queues, queue_clusters
from providers.models import CircuitBreaker, Provider, ProviderLease, ProviderPoolMember

logger = logging.getLogger(__name__)

BREAKER_STATE_VALUES = {
    CircuitBreaker.State.CLOSED: 0,
    CircuitBreaker.State.HALF_OPEN: 1,
    CircuitBreaker.State.OPEN: 2,
}

# prometheus_client names each process's file of live gauges `gauge_live<mode>_<pid>.db`.
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


class DatabaseCollector:
    """Breaker state per provider, queued executions per django-q2 cluster, and calls in
    progress per pool member."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            families = [self._breaker_states(), self._queue_depths(), self._pool_outstanding()]
        except DatabaseError:
            # The processes' own metrics are worth a scrape most when the database is away (a
            # 500 would hide them all); only these series go missing meanwhile.
            logger.warning(
                "Metrics read from the database are left out of this scrape", exc_info=True
            )
            return
        yield from families

    @staticmethod
    def _breaker_states() -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_breaker_state",
            "State of each provider's circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels=["provider"],
        )
        # A provider whose breaker was never used has no row yet: it is closed.
        for name, state in Provider.objects.order_by("name").values_list(
            "name", "circuit_breaker__state"
        ):
            family.add_metric([name], BREAKER_STATE_VALUES.get(state, 0))
        return family

    @staticmethod
    def _pool_outstanding() -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_pool_member_outstanding",
            "Calls in progress on each member of each pool, over every process (live leases).",
            labels=["pool", "provider"],
        )
        live = dict(
            ((pool, member), calls)
            for pool, member, calls in ProviderLease.objects.filter(expires_at__gt=timezone.now())
            .values("pool__name", "member__name")
            .annotate(calls=Count("pk"))
            .values_list("pool__name", "member__name", "calls")
        )
        # Every member has its series, so an idle one reads 0 rather than nothing.
        for names in ProviderPoolMember.objects.order_by("pool__name", "position").values_list(
            "pool__name", "member__name"
        ):
            family.add_metric(list(names), live.get(names, 0))
        return family

    @staticmethod
    def _queue_depths() -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_queue_depth",
            "Executions waiting for a worker, per django-q2 cluster.",
            labels=["cluster"],
        )
        # Routed as the executions' own tasks are (`providers_routed_to`): every cluster,
        # empty ones at 0.
        queued = {queue.cluster: queue.queued for queue in execution_queues()}
        for name, _ in queue_clusters():
            family.add_metric([name], queued.get(name, 0))
        return family


def forget_dead_processes(directory: Path) -> None:
    """Drop the live gauges of processes that are gone (a recycled or killed django-q2 worker),
    so that `livesum` gauges count live processes only.

    gunicorn reports its dead workers (`config.gunicorn.child_exit`); django-q2 has no hook for
    a worker's death, so the files are checked when scraped. Counters and histograms of dead
    processes stay: their totals must never go down.
    """
    for entry in os.scandir(directory):
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match and not _alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), str(directory))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # It runs under another account (a supervisor may run each process under its own),
        # so it may be one of ours.
        return True
    return True
