"""Errors the executions services raise to the API, the admin and commands.

Each carries a stable machine-readable `code` and a human message in `str(exc)`; validation
errors add `errors`, mapping a field to a list of `{"code", "message"}`.
"""


class ExecutionsError(Exception):
    code = "executions_error"


class InvalidConfig(ExecutionsError):
    code = "invalid_config"

    def __init__(self, errors: dict[str, list[dict[str, str]]]) -> None:
        fields = ", ".join(sorted(errors))
        super().__init__(f"The generation config is invalid ({fields}).")
        self.errors = errors


class IdempotencyKeyReused(ExecutionsError):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request body; use a new "
            "key for a different request."
        )


class ExecutionNotCancellable(ExecutionsError):
    code = "not_cancellable"

    def __init__(self, status: str) -> None:
        self.status = status
        super().__init__(f"Only queued executions can be cancelled; this one is {status}.")
