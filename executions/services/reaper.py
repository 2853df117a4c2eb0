"""The reaper: recover executions whose worker died and queued ones whose task will not reach
a worker by itself.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from executions.broker import broker_stranded_task_ids
from executions.models import Execution, FailureCause
from executions.services._common import Clock, error_fields
from executions.services.queue import execution_enqueue_on_commit
from executions.signals import execution_outcome, send_execution_finished
from providers.calls import provider_route

logger = logging.getLogger(__name__)


def _queued_without_a_live_task(*, threshold: datetime, now: datetime) -> list[Execution]:
    queued = (
        Execution.objects.filter(status=Execution.Status.QUEUED, queued_at__lt=threshold)
        .select_related("requested_provider")
        .only("id", "task_id", "requested_provider")
        .order_by("queued_at")
    )
    never_enqueued = list(queued.filter(task_id="")[:REAP_BATCH])
    by_cluster: dict[str | None, list[Execution]] = {}
    for row in queued.exclude(task_id="")[:REAP_BATCH]:
        cluster = provider_route(provider=row.requested_provider).cluster
        by_cluster.setdefault(cluster, []).append(row)
    stranded: list[Execution] = []
    for cluster, rows in by_cluster.items():
        lost = broker_stranded_task_ids(
            cluster=cluster,
            task_ids=[row.task_id for row in rows],
            pulled_before=threshold,
            now=now,
        )
        stranded += [row for row in rows if row.task_id in lost]
    return never_enqueued + stranded


@dataclass(frozen=True)
class ReapResult:
    requeued: list[uuid.UUID]
    failed: list[uuid.UUID]
    enqueued: list[uuid.UUID]


REAP_BATCH = 500


@transaction.atomic
def execution_reap_stale(*, now: Clock = timezone.now) -> ReapResult:
    """Recover running executions whose worker stopped sending heartbeats (killed, lost).

    Each goes back to the queue while it has claims left (`EXECUTIONS_MAX_RUN_ATTEMPTS`), else
    fails with the code `worker_lost`. Queued executions (older than the stale threshold)
    whose task will not reach a worker by itself are enqueued again: those that never got a
    task (the broker was unreachable when they were committed), and those whose task is
    stranded in the broker (pulled by a cluster that died, see `executions.broker`).
    """
    moment = now()
    stale_after = settings.EXECUTIONS_STALE_AFTER_S
    threshold = moment - timedelta(seconds=stale_after)
    max_attempts = settings.EXECUTIONS_MAX_RUN_ATTEMPTS
    orphans = _queued_without_a_live_task(threshold=threshold, now=moment)
    for orphan in orphans:
        execution_enqueue_on_commit(orphan.id, orphan.requested_provider)
    stale = (
        Execution.objects.filter(status=Execution.Status.RUNNING, heartbeat_at__lt=threshold)
        .select_related("requested_provider", "signature_version__signature")
        .defer("inputs", "config", "outputs")[:REAP_BATCH]
    )
    requeued: list[uuid.UUID] = []
    failed: list[uuid.UUID] = []
    for row in stale:
        execution_id, attempts = row.id, row.attempts
        guarded = Execution.objects.filter(
            id=execution_id,
            status=Execution.Status.RUNNING,
            attempts=attempts,
            heartbeat_at__lt=threshold,
        )
        if attempts < max_attempts:
            if guarded.update(
                status=Execution.Status.QUEUED, heartbeat_at=None, started_at=None, task_id=""
            ):
                requeued.append(execution_id)
                execution_enqueue_on_commit(execution_id, row.requested_provider)
        else:
            changes = {
                "status": Execution.Status.FAILED,
                "finished_at": moment,
                "error_cause": FailureCause.WORKER_LOST,
                **error_fields(
                    error_type="WorkerLost",
                    code="worker_lost",
                    message=(
                        f"The worker running this execution stopped sending heartbeats (none "
                        f"for {stale_after:g}s), {attempts} time(s); gave up after "
                        f"{max_attempts} attempts."
                    ),
                ),
            }
            if guarded.update(**changes):
                failed.append(execution_id)
                outcome = execution_outcome(row, provider=None, execution_time_s=None, **changes)
                transaction.on_commit(lambda outcome=outcome: send_execution_finished(outcome))
    enqueued = [orphan.id for orphan in orphans]
    if requeued or failed or enqueued:
        logger.warning(
            "Reaped executions: requeued %s, failed %s, enqueued again %s",
            [str(item) for item in requeued],
            [str(item) for item in failed],
            [str(item) for item in enqueued],
        )
    return ReapResult(requeued=requeued, failed=failed, enqueued=enqueued)
