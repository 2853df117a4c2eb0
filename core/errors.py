"""The one error contract of the project.

Every error a service raises to its callers derives from `ApplicationError`. Each class
carries its machine-readable `code` and its HTTP `status_code` (zulip's style), so no table of
strings maps one to the other: the API's exception handler renders any of them as
`{"code": ..., "message": ..., "errors": {field: [{"code": ..., "message": ...}]}}`, and
commands and the admin show `str(error)`.
"""

from typing import Any

FieldErrors = dict[str, Any]


def field_error(code: str, message: str) -> list[dict[str, str]]:
    """One field's problem, as `errors` holds it: `[{"code": ..., "message": ...}]`."""
    return [{"code": code, "message": message}]


class ApplicationError(Exception):
    """Base of the project's errors. Subclasses set `code`, `status_code` and, when the
    message does not depend on the case, `default_message`."""

    code = "error"
    status_code = 400
    default_message = "The request could not be completed."
    # When set, the API answers with `Retry-After` (seconds): the request may succeed later.
    retry_after_s: int | None = None

    def __init__(self, message: str | None = None, *, errors: FieldErrors | None = None) -> None:
        self.message = message or self.default_message
        # Field-level problems, nested the way the request was: a field name maps to a list
        # of messages (strings or {"code", "message"}) or to the errors of its items.
        self.errors: FieldErrors = errors or {}
        super().__init__(self.message)


class InvalidRequest(ApplicationError):
    code = "invalid_request"
    status_code = 400
    default_message = "The request is invalid; see `errors` for each field."


class NotFound(ApplicationError):
    code = "not_found"
    status_code = 404
    default_message = "Not found."


class Conflict(ApplicationError):
    code = "conflict"
    status_code = 409
    default_message = "The request conflicts with the current state."


class ServiceUnavailable(ApplicationError):
    code = "service_unavailable"
    status_code = 503
    default_message = "The service cannot answer this request now."


class DatabaseUnavailable(ServiceUnavailable):
    """The database connection was lost and could not be re-established in time."""

    code = "database_unavailable"
    default_message = (
        "The database cannot be reached right now; retry in a few seconds. An execute request "
        "retried with the same Idempotency-Key returns the execution it may already have created."
    )
    retry_after_s = 2
