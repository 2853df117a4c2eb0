"""What the executions app tells the rest of the service, without knowing who listens.

Monitoring (metrics, dashboards) sits above every app and reads them; the apps never import
it. Instead they send these signals, and monitoring connects its receivers when it starts.
Each carries server-side names only (signature, provider, codes), never request data.
"""

import logging
from dataclasses import dataclass

from django.dispatch import Signal

from core.notify import notify
from executions.models import EXECUTION_FINISHED_CHANNEL

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutionOutcome:
    """An execution reached a final status (succeeded, failed, timed out or cancelled)."""

    execution_id: str
    status: str
    signature: str
    version: int | None
    requested_provider: str
    # The provider that answered; None when none did.
    provider: str | None
    error_code: str
    # Why it failed, in the failure log's terms ("" when it did not).
    cause: str
    # Seconds from queued to claimed, and from claimed to finished (None when not claimed).
    queue_wait_s: float | None
    duration_s: float | None
    input_tokens: int | None
    output_tokens: int | None
    # Providers tried after the requested one (0 when the first answered or none was tried).
    fallback_hops: int


@dataclass(frozen=True)
class AttemptOutcome:
    """One provider call (or a call the breaker refused) made while running an execution."""

    execution_id: str
    signature: str
    version: int | None
    provider: str
    # The pool whose member `provider` is (None outside a pool; the pool itself is `provider`
    # when none of its members could take the call).
    pool: str | None
    # succeeded, failed or rejected (ExecutionAttempt.Outcome).
    outcome: str
    error_code: str
    duration_s: float


# Sent once the final status is committed, with `outcome=ExecutionOutcome`.
execution_finished = Signal()
# Sent after each attempt row is written, with `outcome=AttemptOutcome`.
attempt_finished = Signal()


def execution_outcome(execution, *, fallback_hops: int = 0, **changes) -> ExecutionOutcome:
    """The outcome of `execution` (loaded with its signature version, signature and providers)
    as it reads after the guarded update that finished it wrote `changes`."""

    def value(name: str):
        return changes[name] if name in changes else getattr(execution, name)

    version = execution.signature_version
    provider = value("provider")
    started_at = value("started_at")
    return ExecutionOutcome(
        execution_id=str(execution.id),
        status=str(value("status")),
        signature=version.signature.name,
        version=version.number,
        requested_provider=execution.requested_provider.name,
        provider=provider.name if provider is not None else None,
        error_code=value("error_code"),
        cause=value("error_cause"),
        queue_wait_s=(
            (started_at - execution.queued_at).total_seconds() if started_at is not None else None
        ),
        duration_s=value("execution_time_s"),
        input_tokens=value("input_tokens"),
        output_tokens=value("output_tokens"),
        fallback_hops=fallback_hops,
    )


def send_execution_finished(outcome: ExecutionOutcome) -> None:
    """Tell this process's receivers (metrics) and every process waiting on the execution
    (sync requests, `core.notify`) that it finished; called once its finish is committed."""
    notify(EXECUTION_FINISHED_CHANNEL, outcome.execution_id)
    # A listener's failure (a metric that cannot be written) must never fail an execution
    # whose outcome is already committed: it is logged and ignored.
    for receiver, response in execution_finished.send_robust(
        sender=ExecutionOutcome, outcome=outcome
    ):
        if isinstance(response, Exception):
            logger.error("Receiver %r of execution_finished failed: %r", receiver, response)


def send_attempt_finished(outcome: AttemptOutcome) -> None:
    for receiver, response in attempt_finished.send_robust(sender=AttemptOutcome, outcome=outcome):
        if isinstance(response, Exception):
            logger.error("Receiver %r of attempt_finished failed: %r", receiver, response)
