"""The API's one error shape, for every endpoint and every kind of error.

`{"code": <machine-readable>, "message": <for a human>, "errors": {<field>: [{"code", "message"}]}}`

`errors` is empty unless specific fields are at fault; it nests the way the request did (a list
field maps to the errors of each item). The project's own errors (`core.errors`) carry their
code and status; DRF's (validation, authentication, permission, throttling, 404, 405, 413,
415) and Django's (`Http404`, `PermissionDenied`, `ValidationError`) are translated here, once,
with their `WWW-Authenticate` and `Retry-After` headers kept.
"""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from core.db import CONNECTION_ERRORS, db_reconnect
from core.errors import ApplicationError, DatabaseUnavailable, InvalidRequest

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, errors: dict | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "errors": field_errors(errors or {})}


def field_errors(details: Any) -> Any:
    """Field errors with each message as `{"code", "message"}`, nested as they came.

    Accepts DRF's full details, DRF's plain details and the services' nested dicts of
    strings; a bare string becomes the code `invalid`.
    """
    if isinstance(details, dict) and set(details) == {"message", "code"}:
        return {"code": str(details["code"]), "message": str(details["message"])}
    if isinstance(details, dict):
        return {str(key): field_errors(value) for key, value in details.items()}
    if isinstance(details, list | tuple):
        return [field_errors(item) for item in details]
    code = getattr(details, "code", None) or "invalid"
    return {"code": str(code), "message": str(details)}


def _as_api_exception(exc: Exception) -> Exception:
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    return exc


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """`REST_FRAMEWORK["EXCEPTION_HANDLER"]`. None (a 500) only for a bug."""
    if isinstance(exc, CONNECTION_ERRORS):
        logger.warning("Answering 503: the database connection was lost (%s)", exc)
        if not connections[DEFAULT_DB_ALIAS].in_atomic_block:
            # So that this thread's next request does not find the dead connection first.
            db_reconnect()
        exc = DatabaseUnavailable()
    if isinstance(exc, ApplicationError):
        # As DRF does for its own exceptions: an atomic request must not commit half a write.
        set_rollback()
        response = Response(error_body(exc.code, exc.message, exc.errors), status=exc.status_code)
        if exc.retry_after_s is not None:
            response["Retry-After"] = str(exc.retry_after_s)
        return response
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        details = exc.get_full_details()
        if not isinstance(details, dict):
            details = {"non_field_errors": details}
        response.data = error_body(InvalidRequest.code, InvalidRequest.default_message, details)
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        detail = exc.detail
        message = str(detail.get("detail", detail) if isinstance(detail, dict) else detail)
        response.data = error_body(code, message)
    return response
