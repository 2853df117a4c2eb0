"""Retention: deleting finished executions (their attempts, the failure log, go with them).

Rows are deleted a batch of ids at a time, each batch in its own short transaction, so no
lock is held for long and the workers writing new executions never wait behind a purge.
Queued and running executions are never deleted, however old.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.models import Success

from executions.models import TERMINAL_STATUSES, Execution, ExecutionAttempt
from executions.services._common import Clock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneProgress:
    """Where a prune stands after a batch: executions (and attempts) deleted so far, of the
    executions there were to delete when it started."""

    executions: int
    attempts: int
    total: int


def _expired(older_than: datetime):
    return Execution.objects.filter(status__in=TERMINAL_STATUSES, finished_at__lt=older_than)


def execution_prune(
    *,
    older_than: datetime,
    batch_size: int,
    dry_run: bool = False,
    progress: Callable[[PruneProgress], None] | None = None,
) -> PruneProgress:
    """Delete the executions that finished before `older_than`, with their attempts,
    `batch_size` executions a transaction, calling `progress` after each batch. With
    `dry_run`, count what would go and delete nothing."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = _expired(older_than).count()
    if dry_run:
        attempts = ExecutionAttempt.objects.filter(
            execution__in=_expired(older_than).values("id")
        ).count()
        return PruneProgress(executions=total, attempts=attempts, total=total)
    done = PruneProgress(executions=0, attempts=0, total=total)
    while True:
        ids = list(
            _expired(older_than).order_by("finished_at").values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return done
        executions, attempts = _delete_batch(ids=ids, older_than=older_than)
        done = PruneProgress(
            executions=done.executions + executions,
            attempts=done.attempts + attempts,
            # Executions that finished meanwhile may have joined the expired ones.
            total=max(total, done.executions + executions),
        )
        if progress is not None:
            progress(done)


@transaction.atomic
def _delete_batch(*, ids: list, older_than: datetime) -> tuple[int, int]:
    # The filter is applied again: a row is deleted only if it is still finished and old
    # (guarded like every other write on executions).
    attempts, _ = ExecutionAttempt.objects.filter(execution_id__in=ids).delete()
    executions, _ = _expired(older_than).filter(id__in=ids).delete()
    return executions, attempts


def execution_prune_cutoff(*, days: int, now: Clock = timezone.now) -> datetime | None:
    """The moment before which finished executions are deleted; None when `days` is 0
    (kept forever)."""
    if days < 0:
        raise ValueError("days must not be negative")
    return now() - timedelta(days=days) if days else None


def execution_prune_expired(*, now: Clock = timezone.now) -> str:
    """Scheduled (daily): apply `EXECUTIONS_RETENTION_DAYS` in batches of
    `EXECUTIONS_PRUNE_BATCH_SIZE`."""
    cutoff = execution_prune_cutoff(days=settings.EXECUTIONS_RETENTION_DAYS, now=now)
    if cutoff is None:
        return "retention is off (EXECUTIONS_RETENTION_DAYS=0)"
    result = execution_prune(older_than=cutoff, batch_size=settings.EXECUTIONS_PRUNE_BATCH_SIZE)
    logger.info(
        "Pruned %d executions and %d attempts finished before %s",
        result.executions,
        result.attempts,
        cutoff.isoformat(),
    )
    return f"deleted {result.executions} executions and {result.attempts} attempts"


def delivered_tasks_prune(*, keep: int) -> int:
    """Delete django-q2's successful tasks beyond the newest `keep` (the admin's "Delivered
    tasks"): what django-q2's `save_limit` does on every save, once a minute instead."""
    newest = Success.objects.order_by("-stopped").values_list("stopped", flat=True)[keep : keep + 1]
    boundary = next(iter(newest), None)
    if boundary is None:
        return 0
    deleted, _ = Success.objects.filter(stopped__lte=boundary).delete()
    return deleted
