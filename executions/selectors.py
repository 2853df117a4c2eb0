"""Reads of executions. Writes live in services."""

import time
import uuid

from django.db.models import QuerySet

from executions.models import Execution, ExecutionAttempt

# The sync API polls the row: quickly at first (most local calls take well under a second),
# then backing off so a long wait costs a query every half second at most.
_POLL_FIRST_S = 0.02
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
    return execution_list(api_key=api_key).get(id=execution_id)


def execution_attempts(*, execution: Execution) -> QuerySet[ExecutionAttempt]:
    return ExecutionAttempt.objects.filter(execution=execution).select_related("provider")


def execution_wait(*, execution_id: uuid.UUID | str, timeout_s: float) -> Execution:
    """The execution once it has finished, or as it is when `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    pause = _POLL_FIRST_S
    while True:
        execution = execution_get(execution_id=execution_id)
        remaining = deadline - time.monotonic()
        if execution.is_finished or remaining <= 0:
            return execution
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _POLL_MAX_S)
