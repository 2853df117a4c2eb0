"""Handing executions to django-q2, on the cluster their provider's route names."""

import uuid

from django.db import transaction
from django_q.tasks import async_task

from core.db import REQUEST_RETRY, db_retry
from executions.models import Execution
from providers.calls import provider_route
from providers.models import Provider


def execution_enqueue(*, execution_id: uuid.UUID, provider: Provider) -> str:
    """Hand the execution to django-q2, on the cluster the provider's route names.

    A lost connection is retried; a task enqueued twice that way runs once (the second
    delivery finds nothing to claim)."""
    cluster = provider_route(provider=provider).cluster
    options = {"cluster": cluster} if cluster else {}

    def enqueue() -> str:
        task_id = async_task(
            "executions.tasks.execution_run",
            str(execution_id),
            q_options=options | {"task_name": f"execution-{execution_id}"},
        )
        Execution.objects.filter(id=execution_id).update(task_id=task_id)
        return task_id

    return db_retry(enqueue, policy=REQUEST_RETRY)


def execution_enqueue_on_commit(execution_id: uuid.UUID, provider: Provider) -> None:
    # Robust: a broker outage must not turn the committed row into an error; the reaper
    # enqueues queued rows that never got a task.
    transaction.on_commit(
        lambda: execution_enqueue(execution_id=execution_id, provider=provider), robust=True
    )
