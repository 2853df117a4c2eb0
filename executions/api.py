"""The execute API: run a registered signature, follow executions, cancel, batch.

Views are thin: serializers check the request's shape, services do the rest. Every error is
`{"code": <machine-readable>, "message": <human>, "errors": {<field>: [{"code", "message"}]}}`
(`errors` only for field-level problems).
"""

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import exceptions, generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework_api_key.models import APIKey

from executions.exceptions import ExecutionsError
from executions.filters import ExecutionFilter
from executions.models import Execution
from executions.selectors import (
    execution_attempts,
    execution_get,
    execution_list,
    execution_wait,
    execution_wait_all,
)
from executions.services import ExecutionCreateResult, execution_cancel, execution_create
from providers.exceptions import NoProviderConfigured, ProviderDisabled, ProviderError
from registry.exceptions import InputValidationError, RegistryError

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 200

# Error bodies --------------------------------------------------------------------------------


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


_NOT_FOUND_CODES = {"signature_not_found", "version_not_found", "alias_not_found"}


def _error(code: str, message: str, errors: dict | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if errors:
        body["errors"] = errors
    return body


def _domain_error(exc: Exception) -> tuple[int, dict[str, Any]] | None:
    """The status and body of an error the services raise, or None for anything else."""
    if isinstance(exc, InputValidationError):
        return 400, _error(exc.code, str(exc), exc.errors)
    if isinstance(exc, RegistryError):
        code = 404 if exc.code in _NOT_FOUND_CODES else 400
        return code, _error(exc.code, str(exc))
    if isinstance(exc, NoProviderConfigured):
        return 503, _error(exc.code, str(exc))
    if isinstance(exc, ProviderDisabled):
        return 400, _error(exc.code, str(exc))
    if isinstance(exc, ProviderError):
        status_code = 404 if exc.code == "provider_not_found" else 400
        return status_code, _error(exc.code, str(exc))
    if isinstance(exc, ExecutionsError):
        status_code = 409 if exc.code in {"idempotency_key_reused", "not_cancellable"} else 400
        return status_code, _error(exc.code, str(exc), getattr(exc, "errors", None))
    return None


def _field_errors(details: Any) -> Any:
    """DRF's full error details with `code` before `message`, nested as the request was."""
    if isinstance(details, dict) and set(details) == {"message", "code"}:
        return {"code": details["code"], "message": str(details["message"])}
    if isinstance(details, dict):
        return {key: _field_errors(value) for key, value in details.items()}
    if isinstance(details, list):
        return [_field_errors(item) for item in details]
    return details


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    domain = _domain_error(exc)
    if domain is not None:
        status_code, body = domain
        return Response(body, status=status_code)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = _error(
            "invalid_request",
            "The request is invalid; see `errors` for each field.",
            _field_errors(exc.get_full_details()),
        )
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = _error(
            codes if isinstance(codes, str) else exc.default_code, str(exc.detail)
        )
    elif isinstance(exc, Http404):
        response.data = _error("not_found", "Not found.")
    return response


class ExecutionsAPIView(APIView):
    """Base of the executions views: the error format above and the body size limit."""

    def get_exception_handler(self):
        return api_exception_handler

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method in ("POST", "PUT", "PATCH"):
            _check_body_size(request)


def _check_body_size(request) -> None:
    limit = settings.EXECUTIONS_MAX_BODY_BYTES
    message = f"The request body is larger than the limit of {limit} bytes."
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise PayloadTooLarge(message)
    try:
        # Also catches bodies sent without a Content-Length (chunked).
        if len(request.body) > limit:
            raise PayloadTooLarge(message)
    except RequestDataTooBig:
        raise PayloadTooLarge(message) from None


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable error code.")
    message = serializers.CharField(help_text="What went wrong, for a human.")
    errors = serializers.DictField(
        required=False,
        help_text="Field-level problems: each field maps to a list of {code, message}.",
    )


# Requests ------------------------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "maxLength": 100}],
        "nullable": True,
        "description": (
            "A version number or an alias name (`production`, `latest`, ...). Omitted: the "
            "`production` alias when set, else the latest version."
        ),
    }
)
class VersionRefField(serializers.Field):
    default_error_messages = {
        "invalid": "Give a version number (an integer from 1) or an alias name (a string).",
    }

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("invalid")
        if isinstance(data, int) and data < 1:
            self.fail("invalid")
        if isinstance(data, str) and not 0 < len(data) <= 100:
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class StrictFieldsMixin:
    """Unknown keys in a request are mistakes (a typo silently ignored would run the wrong
    request), so they are rejected with the code `unknown_field`."""

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {
                    name: [
                        exceptions.ErrorDetail(
                            f"Unknown field; the fields are {', '.join(self.fields)}.",
                            code="unknown_field",
                        )
                    ]
                    for name in unknown
                }
            )
        return super().validate(attrs)


class ExecutionItemSerializer(StrictFieldsMixin, serializers.Serializer):
    signature = serializers.CharField(max_length=100, help_text="Registered signature name.")
    version = VersionRefField(required=False, allow_null=True, default=None)
    inputs = serializers.JSONField(help_text="One value per input field of the version.")
    config = serializers.JSONField(
        required=False,
        default=dict,
        help_text=(
            "Generation settings: temperature (0-2), max_tokens, top_p (0-1), stop. Override "
            "the version's LM defaults."
        ),
    )
    provider = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        max_length=100,
        help_text="Provider name; omitted: the default provider.",
    )


class _WaitFieldsSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=Execution.Mode.choices,
        default=Execution.Mode.SYNC,
        help_text="sync: wait for the result up to timeout_s; async: return at once.",
    )
    timeout_s = serializers.FloatField(
        required=False,
        allow_null=True,
        default=None,
        min_value=0.0,
        help_text="How long a sync request waits (seconds) before answering 202.",
    )

    def validate_timeout_s(self, value):
        limit = settings.EXECUTIONS_MAX_TIMEOUT_S
        if value is not None and not 0 < value <= limit:
            raise serializers.ValidationError(
                f"Must be more than 0 and at most {limit:g} seconds.", code="out_of_range"
            )
        return value


class ExecuteRequestSerializer(ExecutionItemSerializer, _WaitFieldsSerializer):
    pass


class BatchRequestSerializer(StrictFieldsMixin, _WaitFieldsSerializer):
    items = serializers.ListField(
        child=serializers.JSONField(),
        allow_empty=False,
        help_text="Execute requests (signature, version, inputs, config, provider).",
    )

    def validate_items(self, value):
        limit = settings.EXECUTIONS_BATCH_MAX_ITEMS
        if len(value) > limit:
            raise serializers.ValidationError(
                f"A batch holds at most {limit} items; this one has {len(value)}.",
                code="too_many_items",
            )
        return value


# Responses -----------------------------------------------------------------------------------


class ExecutionAttemptSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    position = serializers.IntegerField()
    provider = serializers.CharField(source="provider.name")
    outcome = serializers.CharField()
    error_type = serializers.CharField()
    error_code = serializers.CharField()
    error_message = serializers.CharField()
    counted_by_breaker = serializers.BooleanField()
    started_at = serializers.DateTimeField()
    duration_s = serializers.FloatField()


class ExecutionSerializer(serializers.ModelSerializer):
    signature = serializers.CharField(source="signature_version.signature.name")
    version = serializers.IntegerField(source="signature_version.number")
    requested_provider = serializers.CharField(source="requested_provider.name")
    provider = serializers.CharField(
        source="provider.name",
        allow_null=True,
        help_text="The provider that answered, after fallback; null until one has.",
    )
    error = serializers.SerializerMethodField()
    timings = serializers.SerializerMethodField()
    metrics = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Execution
        fields = [
            "id",
            "url",
            "status",
            "mode",
            "signature",
            "version",
            "requested_provider",
            "provider",
            "inputs",
            "config",
            "outputs",
            "error",
            "timings",
            "metrics",
            "attempts",
            "batch_id",
        ]
        read_only_fields = fields

    @extend_schema_field(
        inline_serializer(
            "ExecutionError",
            {
                "type": serializers.CharField(),
                "code": serializers.CharField(),
                "message": serializers.CharField(),
            },
            allow_null=True,
        )
    )
    def get_error(self, execution: Execution) -> dict | None:
        if not execution.error_code:
            return None
        return {
            "type": execution.error_type,
            "code": execution.error_code,
            "message": execution.error_message,
        }

    @extend_schema_field(
        inline_serializer(
            "ExecutionTimings",
            {
                "queued_at": serializers.DateTimeField(),
                "started_at": serializers.DateTimeField(allow_null=True),
                "finished_at": serializers.DateTimeField(allow_null=True),
            },
        )
    )
    def get_timings(self, execution: Execution) -> dict:
        field = serializers.DateTimeField()
        return {
            name: field.to_representation(value) if value else None
            for name, value in (
                ("queued_at", execution.queued_at),
                ("started_at", execution.started_at),
                ("finished_at", execution.finished_at),
            )
        }

    @extend_schema_field(
        inline_serializer(
            "ExecutionMetrics",
            {
                "execution_time_s": serializers.FloatField(allow_null=True),
                "input_tokens": serializers.IntegerField(allow_null=True),
                "output_tokens": serializers.IntegerField(allow_null=True),
                "memory_mb": serializers.FloatField(allow_null=True),
                "success": serializers.BooleanField(allow_null=True),
            },
        )
    )
    def get_metrics(self, execution: Execution) -> dict:
        return {
            "execution_time_s": execution.execution_time_s,
            "input_tokens": execution.input_tokens,
            "output_tokens": execution.output_tokens,
            "memory_mb": execution.memory_mb,
            "success": execution.success,
        }

    def get_url(self, execution: Execution) -> str:
        return _execution_url(self.context.get("request"), execution)


class ExecutionDetailSerializer(ExecutionSerializer):
    provider_attempts = serializers.SerializerMethodField(
        help_text="Every provider call of every run, in order (fallback and breaker refusals)."
    )

    class Meta(ExecutionSerializer.Meta):
        fields = [*ExecutionSerializer.Meta.fields, "provider_attempts"]
        read_only_fields = fields

    @extend_schema_field(ExecutionAttemptSerializer(many=True))
    def get_provider_attempts(self, execution: Execution) -> list[dict]:
        return ExecutionAttemptSerializer(execution_attempts(execution=execution), many=True).data


def _execution_url(request, execution: Execution) -> str:
    path = reverse("execution-detail", kwargs={"id": execution.id})
    return request.build_absolute_uri(path) if request is not None else path


# Views ---------------------------------------------------------------------------------------


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404 from None


def _client(request) -> dict[str, Any]:
    """Whose request it is, for idempotency scope and ownership."""
    if isinstance(request.auth, APIKey):
        return {"api_key": request.auth, "user": None}
    return {"api_key": None, "user": request.user}


def _idempotency_key(request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH or not key.isprintable():
        raise exceptions.ValidationError(
            {
                IDEMPOTENCY_HEADER: [
                    exceptions.ErrorDetail(
                        f"Use at most {IDEMPOTENCY_KEY_MAX_LENGTH} printable characters.",
                        code="invalid_idempotency_key",
                    )
                ]
            }
        )
    return key


def _create(request, item: dict[str, Any], **options: Any) -> ExecutionCreateResult:
    """`execution_create` for one validated request item, on behalf of the request's client."""
    return execution_create(
        signature=item["signature"],
        version=item["version"],
        inputs=item["inputs"],
        config=item["config"],
        provider=item["provider"],
        **_client(request),
        **options,
    )


def _wait_s(data: dict) -> float:
    return (
        data["timeout_s"]
        if data.get("timeout_s") is not None
        else settings.EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S
    )


_execution_responses = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid request, inputs or config."),
    401: OpenApiResponse(ErrorSerializer, description="No or invalid credentials."),
    404: OpenApiResponse(ErrorSerializer, description="Unknown signature, version or provider."),
    409: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused with another body."),
    413: OpenApiResponse(ErrorSerializer, description="Request body too large."),
    429: OpenApiResponse(ErrorSerializer, description="Rate limit exceeded (see Retry-After)."),
}

_idempotency_parameter = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description=(
        "A client-chosen key: a retried request with the same key and body returns the same "
        "execution instead of running again; the same key with another body is a 409."
    ),
)


class ExecuteView(ExecutionsAPIView):
    """Run a registered signature."""

    serializer_class = ExecuteRequestSerializer

    @extend_schema(
        operation_id="dspy_execute",
        request=ExecuteRequestSerializer,
        parameters=[_idempotency_parameter],
        responses={
            200: OpenApiResponse(ExecutionSerializer, description="Finished (sync mode)."),
            202: OpenApiResponse(
                ExecutionSerializer,
                description="Accepted: queued or still running; poll the Location.",
            ),
            **_execution_responses,
        },
        tags=["executions"],
    )
    def post(self, request):
        serializer = ExecuteRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = _create(
            request,
            data,
            mode=data["mode"],
            timeout_s=data["timeout_s"],
            idempotency_key=_idempotency_key(request),
        )
        execution = result.execution
        if data["mode"] == Execution.Mode.SYNC and not execution.is_finished:
            execution = execution_wait(execution_id=execution.id, timeout_s=_wait_s(data))
        else:
            execution = execution_get(execution_id=execution.id)
        finished = data["mode"] == Execution.Mode.SYNC and execution.is_finished
        body = ExecutionSerializer(execution, context={"request": request}).data
        headers = {} if result.created else {"Idempotent-Replayed": "true"}
        if finished:
            return Response(body, status=status.HTTP_200_OK, headers=headers)
        headers["Location"] = body["url"]
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)


class ExecuteBatchView(ExecutionsAPIView):
    """Run several requests at once; each item is validated and answered on its own."""

    serializer_class = BatchRequestSerializer

    @extend_schema(
        operation_id="dspy_execute_batch",
        request=BatchRequestSerializer,
        parameters=[_idempotency_parameter],
        responses={
            200: OpenApiResponse(
                inline_serializer(
                    "BatchResult",
                    {
                        "batch_id": serializers.UUIDField(),
                        "items": inline_serializer(
                            "BatchItemResult",
                            {
                                "index": serializers.IntegerField(),
                                "execution": ExecutionSerializer(required=False),
                                "error": ErrorSerializer(required=False),
                                "status": serializers.IntegerField(
                                    required=False, help_text="The HTTP status of a rejected item."
                                ),
                            },
                            many=True,
                        ),
                    },
                ),
                description=(
                    "Nothing left pending: every accepted item finished (sync), or every item "
                    "was rejected. Each item has either `execution` or `error`."
                ),
            ),
            202: OpenApiResponse(description="Some accepted items are still queued or running."),
            **_execution_responses,
        },
        tags=["executions"],
    )
    def post(self, request):
        serializer = BatchRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = _idempotency_key(request)
        batch_id = uuid.uuid4()
        outcomes: list[dict[str, Any]] = []
        for index, item in enumerate(data["items"]):
            submitted = self._submit(
                request,
                item,
                mode=data["mode"],
                key=f"{key}#{index}" if key else "",
                batch_id=batch_id,
            )
            outcomes.append({"index": index, **submitted})
        executions = execution_wait_all(
            execution_ids=[
                outcome["execution"].id for outcome in outcomes if "execution" in outcome
            ],
            timeout_s=_wait_s(data) if data["mode"] == Execution.Mode.SYNC else 0.0,
        )
        pending = not all(execution.is_finished for execution in executions.values())
        items = []
        for outcome in outcomes:
            if "execution" in outcome:
                execution = executions[outcome["execution"].id]
                outcome = {
                    "index": outcome["index"],
                    "execution": ExecutionSerializer(execution, context={"request": request}).data,
                }
            items.append(outcome)
        # A replayed batch (same Idempotency-Key) reports the batch its executions belong to.
        batch_id = next(
            (item["execution"]["batch_id"] for item in items if "execution" in item), batch_id
        )
        http_status = status.HTTP_202_ACCEPTED if pending else status.HTTP_200_OK
        return Response({"batch_id": batch_id, "items": items}, status=http_status)

    def _submit(self, request, item: Any, *, mode: str, key: str, batch_id: uuid.UUID) -> dict:
        try:
            if not isinstance(item, dict):
                raise exceptions.ValidationError(
                    {
                        "non_field_errors": [
                            exceptions.ErrorDetail("Each item must be an object.", code="invalid")
                        ]
                    }
                )
            serializer = ExecutionItemSerializer(data=item)
            serializer.is_valid(raise_exception=True)
            result = _create(
                request,
                serializer.validated_data,
                mode=mode,
                idempotency_key=key,
                batch_id=batch_id,
            )
        except (exceptions.ValidationError, RegistryError, ProviderError, ExecutionsError) as exc:
            response = api_exception_handler(exc, {"request": request, "view": self})
            return {"error": response.data, "status": response.status_code}
        return {"execution": result.execution}


class ExecutionListView(ExecutionsAPIView, generics.ListAPIView):
    """Executions, newest first, filtered and paginated."""

    serializer_class = ExecutionSerializer
    filterset_class = ExecutionFilter

    def get_queryset(self):
        return execution_list(api_key=_client(self.request)["api_key"])

    @extend_schema(tags=["executions"])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ExecutionDetailView(ExecutionsAPIView, generics.RetrieveAPIView):
    """One execution: status, outputs, error, provider used, timings, metrics, attempts."""

    serializer_class = ExecutionDetailSerializer
    lookup_field = "id"

    def get_queryset(self):
        return execution_list(api_key=_client(self.request)["api_key"])

    def get_object(self):
        self.kwargs[self.lookup_field] = _uuid(self.kwargs[self.lookup_field])
        return super().get_object()

    @extend_schema(
        tags=["executions"], responses={200: ExecutionDetailSerializer, 404: ErrorSerializer}
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ExecutionCancelView(ExecutionsAPIView):
    """Cancel a queued execution."""

    serializer_class = ExecutionSerializer

    @extend_schema(
        operation_id="executions_cancel",
        request=None,
        responses={
            200: ExecutionSerializer,
            404: ErrorSerializer,
            409: OpenApiResponse(ErrorSerializer, description="Not queued any more."),
        },
        tags=["executions"],
    )
    def post(self, request, id):
        try:
            execution = execution_get(execution_id=_uuid(id), api_key=_client(request)["api_key"])
        except Execution.DoesNotExist:
            raise Http404 from None
        execution = execution_cancel(execution=execution)
        return Response(ExecutionSerializer(execution, context={"request": request}).data)
