"""Reads of executions. Writes live in services.

The reads an API answer depends on are retried briefly on a new connection after a lost one
(`core.db`), so that a request whose execution was written still answers with it.
"""

import uuid

from django.db.models import Q, QuerySet

from core.db import REQUEST_RETRY, db_retry
from core.notify import wait_until
from executions.models import EXECUTION_FINISHED_CHANNEL, Execution, ExecutionAttempt

# Without live notifications the sync API polls the row: often at first (a short local answer
# takes a few hundred milliseconds, and every pause is latency added to it), then backing off
# gently so a long wait costs a query every half second at most. With them, it reads again
# when notified, and at least this often in case a notification was lost (a finish that
# sends none, such as the reaper's, or a listener that reconnected).
_NOTIFIED_FALLBACK_S = 1.0
_POLL_FIRST_S = 0.01
_POLL_GROWTH = 1.25
_POLL_MAX_S = 0.5


def execution_list(*, api_key=None) -> QuerySet[Execution]:
    """Executions, newest first; an API key sees only the executions it created."""
    queryset = Execution.objects.select_related(
        "signature_version__signature", "requested_provider", "provider"
    ).order_by("-queued_at", "-id")
    if api_key is not None:
        queryset = queryset.filter(api_key=api_key)
    return queryset


def execution_get(*, execution_id: uuid.UUID | str, api_key=None) -> Execution:
    """One execution (raises Execution.DoesNotExist, also for another API key's execution)."""
    return db_retry(
        lambda: execution_list(api_key=api_key).get(id=execution_id), policy=REQUEST_RETRY
    )


def execution_attempts(*, execution: Execution) -> QuerySet[ExecutionAttempt]:
    return ExecutionAttempt.objects.filter(execution=execution).select_related("provider")


def execution_wait_all(
    *, execution_ids: list[uuid.UUID], timeout_s: float
) -> dict[uuid.UUID, Execution]:
    """The executions by id once all have finished, or as they are when `timeout_s` has passed.

    Woken by the notification of each finish (`core.notify`), it reads the rows once at
    the start and once per notification (or per fallback pause), one query however many
    executions there are."""

    def read() -> tuple[dict[uuid.UUID, Execution], bool]:
        executions = db_retry(lambda: execution_list().in_bulk(execution_ids), policy=REQUEST_RETRY)
        return executions, all(execution.is_finished for execution in executions.values())

    return wait_until(
        read,
        channel=EXECUTION_FINISHED_CHANNEL,
        keys=[str(execution_id) for execution_id in execution_ids],
        timeout_s=timeout_s,
        fallback_s=_NOTIFIED_FALLBACK_S,
        poll_schedule=(_POLL_FIRST_S, _POLL_GROWTH, _POLL_MAX_S),
    )


def execution_wait(*, execution_id: uuid.UUID, timeout_s: float) -> Execution:
    """The execution once it has finished, or as it is when `timeout_s` has passed."""
    return execution_wait_all(execution_ids=[execution_id], timeout_s=timeout_s)[execution_id]


def execution_client_scope(*, api_key=None, user=None) -> Q | None:
    """The executions of one client: its API key's, or a signed-in user's own (session
    requests carry no key); None for a request with neither. Idempotency keys and queue
    shares are per client."""
    if api_key is not None:
        return Q(api_key=api_key)
    if user is not None and user.is_authenticated and user.pk:
        return Q(api_key__isnull=True, created_by=user)
    return None
