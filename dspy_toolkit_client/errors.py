"""The client's exceptions: one family, each carrying the API's error `code`.

The API answers every error as `{"code", "message", "errors"}`; `ToolkitError` keeps the three,
with the HTTP `status` and, where the server sent one, `retry_after` (seconds). The subclass
follows the status, so a caller can catch a kind of failure (`NotFoundError`) and still read
the exact reason in `code` (`signature_not_found`, `version_not_found`, ...).
"""

from typing import Any


class ToolkitError(Exception):
    """Base of every error the client raises."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        errors: dict[str, Any] | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        # Field at fault -> list of {"code", "message"}, nested the way the request was.
        self.errors: dict[str, Any] = errors or {}
        self.status = status
        self.retry_after = retry_after
        self.execution_id = execution_id
        # The item's position in the list given to `batch`, for an item's own error.
        self.index: int | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r})"


class InvalidRequestError(ToolkitError):
    """400 (and 405, 413, 415): the request, its inputs or its settings are at fault."""


class AuthenticationError(ToolkitError):
    """401: no API key, or one the server does not know (or revoked)."""


class PermissionDeniedError(ToolkitError):
    """403."""


class NotFoundError(ToolkitError):
    """404: unknown signature, version, alias, provider or execution."""


class ConflictError(ToolkitError):
    """409, e.g. `idempotency_key_reused`: the same key was sent with another request."""


class RateLimitedError(ToolkitError):
    """429 (`throttled`, `client_queue_full`) still refused after the client's retries."""


class UnavailableError(ToolkitError):
    """503 (`queue_full`, `database_unavailable`, `no_provider_configured`)."""


class ServerError(ToolkitError):
    """Any other 5xx, or an answer that is not the API's (a proxy's error page)."""


class ConnectionFailed(ToolkitError):
    """The server could not be reached, or the connection broke, on every try."""


class ExecutionFailed(ToolkitError):
    """The execution was accepted and ran, and did not succeed: `code` and `message` are the
    execution's error, `cause` its root cause, `execution_id` the execution to look at."""

    def __init__(self, message: str, *, cause: str | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.cause = cause


class ExecutionTimeout(ToolkitError, TimeoutError):
    """The call's `timeout` passed first. When the execution had been accepted,
    `execution_id` names it: it may still finish (`Toolkit.wait` picks it up again)."""


_BY_STATUS: dict[int, type[ToolkitError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: InvalidRequestError,
    409: ConflictError,
    413: InvalidRequestError,
    415: InvalidRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}


def error_class(status: int) -> type[ToolkitError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ToolkitError


def error_from_body(body: Any, *, status: int, retry_after: float | None = None) -> ToolkitError:
    """The exception for one error answer, in the API's shape or not (a proxy's page)."""
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return error_class(status)(
            str(body.get("message") or body["code"]),
            code=body["code"],
            errors=body.get("errors") if isinstance(body.get("errors"), dict) else None,
            status=status,
            retry_after=retry_after,
        )
    return error_class(status)(
        f"The server answered HTTP {status} without the API's error body.",
        code="unexpected_response",
        status=status,
        retry_after=retry_after,
    )
