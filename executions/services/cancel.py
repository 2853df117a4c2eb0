"""Cancelling a queued execution."""

import logging

from django.utils import timezone

from executions.exceptions import ExecutionNotCancellable
from executions.models import Execution, FailureCause
from executions.services._common import Clock, error_fields
from executions.signals import execution_outcome, send_execution_finished

logger = logging.getLogger(__name__)


def execution_cancel(*, execution: Execution, now: Clock = timezone.now) -> Execution:
    """Cancel a queued execution (its task, when delivered, finds nothing to claim)."""
    cancelled = Execution.objects.filter(id=execution.id, status=Execution.Status.QUEUED).update(
        status=Execution.Status.CANCELLED,
        finished_at=now(),
        error_cause=FailureCause.CANCELLED,
        **error_fields(
            error_type="Cancelled", code="cancelled", message="Cancelled before it started."
        ),
    )
    execution.refresh_from_db()
    if not cancelled:
        raise ExecutionNotCancellable(execution.status)
    send_execution_finished(execution_outcome(execution))
    return execution
