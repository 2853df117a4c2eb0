"""Errors the executions services raise to the API, the admin and commands.

Each is a `core.errors.ApplicationError`: a stable machine-readable `code`, an HTTP status
and a human message in `str(exc)`; validation errors add `errors`, mapping a field to a list
of `{"code", "message"}`.
"""

from core.errors import ApplicationError, Conflict, InvalidRequest


class ExecutionsError(ApplicationError):
    code = "executions_error"


class InvalidConfig(ExecutionsError, InvalidRequest):
    code = "invalid_config"

    def __init__(self, errors: dict[str, list[dict[str, str]]]) -> None:
        fields = ", ".join(sorted(errors))
        super().__init__(f"The generation config is invalid ({fields}).", errors=errors)


class IdempotencyKeyReused(ExecutionsError, Conflict):
    code = "idempotency_key_reused"
    default_message = (
        "This Idempotency-Key was already used with a different request body; use a new key "
        "for a different request."
    )


class ExecutionNotCancellable(ExecutionsError, Conflict):
    code = "not_cancellable"

    def __init__(self, status: str) -> None:
        self.status = status
        super().__init__(f"Only queued executions can be cancelled; this one is {status}.")


class ClientQueueFull(ExecutionsError):
    """The client already has as many executions waiting as it may (its share of the queue)."""

    code = "client_queue_full"
    status_code = 429
    retry_after_s = 5

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This client already has {limit} executions waiting, its share of the queue; "
            "retry once some have finished."
        )


class QueueFull(ExecutionsError):
    """The queue of the cluster that would run the execution is full: the service is shedding
    load rather than letting the queue grow without bound."""

    code = "queue_full"
    status_code = 503
    retry_after_s = 5

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The service has {limit} executions waiting for this kind of provider, as many as "
            "it takes; retry in a few seconds."
        )
