"""The OpenAPI schema's shared parts: the authentication schemes, the one error component,
the errors every operation can answer, and field types the apps document with (drf-spectacular)."""

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from core.api.middleware import API_PREFIX


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "core.api.authentication.APIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`: create keys in the admin or with "
            "`manage.py executions_create_api_key <name>`.",
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "core.api.authentication.StaffSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "The admin session of a staff user.",
        }


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (`core.api.errors`)."""

    code = serializers.CharField(help_text="Machine-readable error code, e.g. `invalid_request`.")
    message = serializers.CharField(help_text="What went wrong, for a human.")
    errors = serializers.DictField(
        child=serializers.JSONField(),
        help_text=(
            "Field-level problems, nested as the request was: a field maps to a list of "
            "`{code, message}` (or to the errors of its items). Empty when no field is at fault."
        ),
    )


def error_response(description: str, *, examples: list | None = None) -> OpenApiResponse:
    """An error response of an operation, documented with the one error component."""
    return OpenApiResponse(ErrorSerializer, description=description, examples=examples)


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.JSONField):
    """A JSON value documented as an object (DRF's JSONField documents any value). What the
    object must hold is checked where it is used, as before."""


class RuntimeSchemaField:
    """A serializer field whose documented schema depends on settings read per request (a
    limit an operator can change): `openapi_schema` builds it each time the schema is made,
    so the documentation states the limits the server enforces now."""

    def openapi_schema(self, auto_schema: openapi.AutoSchema, direction: str) -> dict[str, Any]:
        raise NotImplementedError


class RuntimeSchemaFieldExtension(OpenApiSerializerFieldExtension):
    target_class = RuntimeSchemaField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        return self.target.openapi_schema(auto_schema, direction)


_BODY_METHODS = ("POST", "PUT", "PATCH")


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, with every operation titled and the errors every operation
    can answer documented.

    An operation declares only its own errors (a 404 for an unknown signature, a 409);
    the ones the API's plumbing gives every operation are added here, all with the one error
    component: under /api/, 400 for a body or query and 413 for a write (the request guard's);
    401 and 403 for credentials, 404 for a path parameter, 415 for a body, 429 for the rate
    limit. An endpoint without authentication, permissions or throttling (the health probes)
    gets none of their errors.
    """

    def get_summary(self) -> str | None:
        # An operation without its own summary is titled by the first line of its description
        # (its docstring), so that no operation is listed without one.
        summary = super().get_summary()
        if summary:
            return summary
        description = str(self.get_description() or "").strip()
        return description.splitlines()[0] if description else None

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status_code, description in self._plumbing_errors():
            if status_code not in responses:
                responses[status_code] = self._get_response_for_code(
                    error_response(description), status_code, direction=direction
                )
        return dict(sorted(responses.items()))

    def _plumbing_errors(self) -> list[tuple[str, str]]:
        errors = []
        api = self.path.startswith(API_PREFIX)
        writes = api and self.method in _BODY_METHODS
        has_body = writes and self.get_request_serializer() is not None
        # Under /api/ the request guard refuses a query string with a NUL character, whatever
        # the operation's parameters.
        if api:
            errors.append(("400", "The request, its body or its query parameters are invalid."))
        # Endpoints open to anyone (the health probes) refuse no credentials.
        if self.view.authentication_classes:
            errors.append(("401", "No credentials, or invalid, expired or revoked ones."))
        if not all(permission is AllowAny for permission in self.view.permission_classes):
            errors.append(("403", "The credentials do not allow this operation."))
        if "{" in self.path:
            errors.append(("404", "Nothing exists at this path."))
        # The body limit holds for every write under /api/, even one that reads no body.
        if writes:
            errors.append(("413", "The body is larger than the limit (`API_MAX_BODY_BYTES`)."))
        if has_body:
            errors.append(("415", "The body is not JSON (`Content-Type: application/json`)."))
        if self.view.throttle_classes:
            errors.append(("429", "The client's rate limit is exceeded; see `Retry-After`."))
        return errors
