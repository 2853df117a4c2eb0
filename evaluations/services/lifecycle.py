"""The life of a long run (evaluation or optimization), shared by both kinds.

queued -> running (a worker claimed it) -> succeeded | failed | cancelled. Every transition is
a guarded update, so two deliveries of one task, a cancel racing a finish, or the reaper
racing a slow worker all leave one outcome. A running run proves its worker is alive with
`heartbeat_at` (a background thread refreshes it); the reaper puts a run whose heartbeat went
stale back in the queue while it has attempts left (an evaluation resumes where it stopped,
since each finished example is saved), and fails it with `worker_lost` after that.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.tasks import async_task

from core.db import REQUEST_RETRY, RetryPolicy, db_retry
from evaluations.models import EvaluationRun, OptimizationRun, RunStatus
from providers.calls import provider_route
from providers.models import Provider

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
RunModel = type[EvaluationRun] | type[OptimizationRun]

# The task each kind of run is executed by, and the provider whose route picks its cluster.
RUN_TASKS: dict[type, str] = {
    EvaluationRun: "evaluations.tasks.evaluation_run",
    OptimizationRun: "evaluations.tasks.optimization_run",
}


def _route_provider(run: EvaluationRun | OptimizationRun) -> Provider:
    return run.provider if isinstance(run, EvaluationRun) else run.student_provider


def run_enqueue(*, run: EvaluationRun | OptimizationRun) -> str:
    """Hand the run to django-q2 on the cluster its provider's route names (the inference
    cluster for a local model). Its timeout is the runs' own: they last far longer than an
    execution, and a second delivery finds the run claimed and returns."""
    cluster = provider_route(provider=_route_provider(run)).cluster
    options = {"cluster": cluster} if cluster else {}
    model = type(run)

    def enqueue() -> str:
        task_id = async_task(
            RUN_TASKS[model],
            run.pk,
            q_options=options
            | {
                "task_name": f"{model._meta.model_name}-{run.pk}",
                "timeout": settings.EVALUATIONS_RUN_TIMEOUT_S,
            },
        )
        model.objects.filter(pk=run.pk).update(task_id=task_id)
        return task_id

    return db_retry(enqueue, policy=REQUEST_RETRY)


def run_enqueue_on_commit(*, run: EvaluationRun | OptimizationRun) -> None:
    # Robust: a broker outage leaves the committed row queued, and the reaper enqueues it.
    transaction.on_commit(lambda: run_enqueue(run=run), robust=True)


def run_claim(*, model: RunModel, run_id: int, now: Clock = timezone.now) -> bool:
    """Take a queued run for this worker. False when another delivery has it or it ended."""
    moment = now()
    return bool(
        db_retry(
            lambda: model.objects.filter(
                pk=run_id, status=RunStatus.QUEUED, cancel_requested=False
            ).update(
                status=RunStatus.RUNNING,
                attempts=F("attempts") + 1,
                heartbeat_at=moment,
                started_at=Coalesce(F("started_at"), moment),
            )
        )
    )


def run_heartbeat(*, model: RunModel, run_id: int, now: Clock = timezone.now) -> int:
    return model.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(heartbeat_at=now())


class RunHeartbeat:
    """Refreshes a running run's heartbeat from a background thread while the worker works
    (an optimizer can spend minutes inside DSPy without reporting anything)."""

    def __init__(self, *, model: RunModel, run_id: int, now: Clock = timezone.now) -> None:
        self.model, self.run_id, self.now = model, run_id, now
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="run-heartbeat", daemon=True)

    def __enter__(self) -> "RunHeartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        policy = RetryPolicy(max_elapsed_s=settings.EXECUTIONS_HEARTBEAT_S)
        try:
            while not self.stop.wait(settings.EXECUTIONS_HEARTBEAT_S):
                try:
                    db_retry(
                        lambda: run_heartbeat(model=self.model, run_id=self.run_id, now=self.now),
                        policy=policy,
                    )
                except DatabaseError:
                    logger.exception(
                        "Could not write the heartbeat of %s %s", self.model, self.run_id
                    )
        finally:
            connection.close()


def run_finish(
    *, model: RunModel, run_id: int, status: str, now: Clock = timezone.now, **fields: Any
) -> bool:
    """Move a running run to its final status. False when it was no longer running (the
    reaper or a cancel got there first)."""
    return bool(
        db_retry(
            lambda: model.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
                status=status, finished_at=now(), **fields
            )
        )
    )


def run_cancel_requested(*, model: RunModel, run_id: int) -> bool:
    """Whether someone asked the running run to stop (checked between units of work)."""
    return model.objects.filter(pk=run_id, cancel_requested=True).exists()


CANCELLED_MESSAGE = "Cancelled on request."


def run_cancel(
    *, run: EvaluationRun | OptimizationRun, now: Clock = timezone.now
) -> EvaluationRun | OptimizationRun:
    """Cancel a run: a queued one at once; a running one is asked to stop, and stops at its
    next unit of work (an example, a trial). A finished run is left as it is."""
    model = type(run)
    model.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED,
        cancel_requested=True,
        finished_at=now(),
        error_code="cancelled",
        error_message=CANCELLED_MESSAGE,
    )
    model.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    return run


@dataclass(frozen=True)
class RunReapResult:
    requeued: list[str]
    failed: list[str]
    enqueued: list[str]


def _label(run: EvaluationRun | OptimizationRun) -> str:
    return f"{run._meta.model_name} {run.pk}"


@transaction.atomic
def runs_reap_stale(*, now: Clock = timezone.now) -> RunReapResult:
    """Recover runs whose worker stopped sending heartbeats, and queued runs that never got
    a task: the same rules as for executions (`EXECUTIONS_STALE_AFTER_S`,
    `EXECUTIONS_MAX_RUN_ATTEMPTS`)."""
    moment = now()
    stale_after = settings.EXECUTIONS_STALE_AFTER_S
    threshold = moment - timedelta(seconds=stale_after)
    max_attempts = settings.EXECUTIONS_MAX_RUN_ATTEMPTS
    requeued: list[str] = []
    failed: list[str] = []
    enqueued: list[str] = []
    for model in (EvaluationRun, OptimizationRun):
        related = "provider" if model is EvaluationRun else "student_provider"
        for run in model.objects.filter(
            status=RunStatus.QUEUED, task_id="", created_at__lt=threshold
        ).select_related(related)[:100]:
            run_enqueue_on_commit(run=run)
            enqueued.append(_label(run))
        stale = model.objects.filter(
            Q(heartbeat_at__lt=threshold) | Q(heartbeat_at__isnull=True),
            status=RunStatus.RUNNING,
        ).select_related(related)[:100]
        for run in stale:
            guarded = model.objects.filter(
                pk=run.pk, status=RunStatus.RUNNING, attempts=run.attempts
            ).filter(Q(heartbeat_at__lt=threshold) | Q(heartbeat_at__isnull=True))
            if run.cancel_requested:
                if guarded.update(
                    status=RunStatus.CANCELLED,
                    finished_at=moment,
                    error_code="cancelled",
                    error_message=CANCELLED_MESSAGE,
                ):
                    failed.append(_label(run))
            elif run.attempts < max_attempts:
                if guarded.update(status=RunStatus.QUEUED, heartbeat_at=None, task_id=""):
                    requeued.append(_label(run))
                    run_enqueue_on_commit(run=run)
            elif guarded.update(
                status=RunStatus.FAILED,
                finished_at=moment,
                error_code="worker_lost",
                error_message=(
                    f"The worker running this {run._meta.verbose_name} stopped sending "
                    f"heartbeats (none for {stale_after:g}s), {run.attempts} time(s); gave up "
                    f"after {max_attempts} attempts."
                ),
            ):
                failed.append(_label(run))
    if requeued or failed or enqueued:
        logger.warning(
            "Reaped runs: requeued %s, ended %s, enqueued again %s", requeued, failed, enqueued
        )
    return RunReapResult(requeued=requeued, failed=failed, enqueued=enqueued)
