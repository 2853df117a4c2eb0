"""The execute API: run a registered signature, follow executions, cancel, batch.

Views are thin: a serializer checks the request's shape, one service does the work, a
serializer renders the answer. Errors are the API's one shape (`core.api.errors`).
"""

import uuid
from typing import Any

from django.conf import settings
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import exceptions, generics, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_api_key.models import APIKey

from core.api.errors import error_body
from core.api.pagination import KeysetPagination
from core.api.schema import error_response
from core.errors import InvalidRequest, field_error
from executions.filters import ExecutionFilter
from executions.models import Execution
from executions.selectors import execution_get, execution_list, execution_wait
from executions.serializers import (
    BatchRequestSerializer,
    BatchResultSerializer,
    ExecuteRequestSerializer,
    ExecutionDetailSerializer,
    ExecutionItemSerializer,
    ExecutionSerializer,
    RerunRequestSerializer,
)
from executions.services.cancel import execution_cancel
from executions.services.create import BatchItem, execution_create, execution_create_batch
from executions.services.rerun import execution_rerun

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 200
ITEM_FIELDS = ("signature", "version", "inputs", "config", "provider")


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


def _wait_s(data: dict) -> float:
    return (
        data["timeout_s"]
        if data.get("timeout_s") is not None
        else settings.EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S
    )


_QUESTION = {"question": "What is the capital of France?"}
_EXECUTION_ID = "3f1c9a52-7d4e-4b8a-9c1e-2a6b5d8f0e47"
_SUCCEEDED = {
    "id": _EXECUTION_ID,
    "url": f"http://localhost:8000/api/v1/executions/{_EXECUTION_ID}",
    "status": "succeeded",
    "mode": "sync",
    "signature": "qa",
    "version": 1,
    "requested_provider": "local-default",
    "provider": "local-default",
    "inputs": _QUESTION,
    "config": {"temperature": 0.0, "max_tokens": 64},
    "outputs": {"answer": "Paris"},
    "error": None,
    "timings": {
        "queued_at": "2026-01-05T10:00:00.120000Z",
        "started_at": "2026-01-05T10:00:00.150000Z",
        "finished_at": "2026-01-05T10:00:00.610000Z",
    },
    "metrics": {
        "execution_time_s": 0.46,
        "input_tokens": 52,
        "output_tokens": 3,
        "memory_mb": 412.5,
        "success": True,
    },
    "attempts": 1,
    "batch_id": None,
    "rerun_of": None,
}
_RERUN_ID = "8b0d6e1f-2c3a-4d5b-9e7f-1a2b3c4d5e6f"
_RERUN_URL = f"http://localhost:8000/api/v1/executions/{_RERUN_ID}"
_QUEUED = _SUCCEEDED | {
    "status": "queued",
    "mode": "async",
    "provider": None,
    "outputs": None,
    "timings": {
        "queued_at": "2026-01-05T10:00:00.120000Z",
        "started_at": None,
        "finished_at": None,
    },
    "metrics": {
        "execution_time_s": None,
        "input_tokens": None,
        "output_tokens": None,
        "memory_mb": None,
        "success": None,
    },
    "attempts": 0,
}

_execution_errors = {
    400: error_response(
        "The body is invalid: its shape, the inputs for the version, the config, or the "
        "provider is disabled."
    ),
    404: error_response("Unknown signature, version or provider."),
    409: error_response("Idempotency-Key reused with another body."),
    503: error_response("No provider is configured."),
}

_idempotency_parameter = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description=(
        "A client-chosen key (at most 200 printable characters): a retried request with the "
        "same key and body returns the same execution instead of running again; the same key "
        "with another body is a 409."
    ),
)
_replayed_header = OpenApiParameter(
    "Idempotent-Replayed",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    enum=["true"],
    response=[200, 202],
    description="Present when the answer is an earlier execution of the same Idempotency-Key.",
)
_location_header = OpenApiParameter(
    "Location",
    OpenApiTypes.URI,
    OpenApiParameter.HEADER,
    response=[202],
    description="The execution to poll (`GET /api/v1/executions/{id}`).",
)
_execution_id_parameter = OpenApiParameter(
    "id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The execution's id, as returned by execute.",
)

_rerun_id_parameter = OpenApiParameter(
    "id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The id of the execution to run again.",
    examples=[OpenApiExample("An earlier execution", value=_EXECUTION_ID)],
)


class ExecuteView(APIView):
    """Run a registered signature."""

    serializer_class = ExecuteRequestSerializer

    @extend_schema(
        operation_id="dspy_execute",
        summary="Run a registered signature",
        description=(
            "Runs a version of a registered signature on a provider (the default one unless "
            "`provider` names one), falling back along the provider's fallbacks when it fails. "
            "`sync` (the default) waits up to `timeout_s` and answers 200 with the finished "
            "execution, or 202 when it is still running; `async` answers 202 at once. Either "
            "way the execution is recorded and can be polled at its `url`."
        ),
        request=ExecuteRequestSerializer,
        parameters=[_idempotency_parameter, _replayed_header, _location_header],
        responses={
            200: OpenApiResponse(ExecutionSerializer, description="Finished (sync mode)."),
            202: OpenApiResponse(
                ExecutionSerializer,
                description="Accepted: queued or still running; poll the Location.",
            ),
            **_execution_errors,
        },
        examples=[
            OpenApiExample(
                "Run and wait for the answer",
                request_only=True,
                value={
                    "signature": "qa",
                    "inputs": _QUESTION,
                    "config": {"temperature": 0.0, "max_tokens": 64},
                    "timeout_s": 30,
                },
            ),
            OpenApiExample(
                "Queue a pinned version and poll",
                request_only=True,
                value={
                    "signature": "qa",
                    "version": "production",
                    "inputs": _QUESTION,
                    "provider": "local-default",
                    "mode": "async",
                },
            ),
            OpenApiExample("Finished", response_only=True, status_codes=["200"], value=_SUCCEEDED),
            OpenApiExample("Queued", response_only=True, status_codes=["202"], value=_QUEUED),
            OpenApiExample(
                "Inputs that do not fit the version",
                response_only=True,
                status_codes=["400"],
                value={
                    "code": "invalid_inputs",
                    "message": "The inputs do not match the signature's input fields (question).",
                    "errors": {
                        "question": [
                            {"code": "missing", "message": "The input 'question' is required."}
                        ]
                    },
                },
            ),
        ],
        tags=["executions"],
    )
    def post(self, request):
        serializer = ExecuteRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = execution_create(
            **{name: data[name] for name in ITEM_FIELDS},
            mode=data["mode"],
            timeout_s=data["timeout_s"],
            idempotency_key=_idempotency_key(request),
            **_client(request),
        )
        execution = result.execution
        if data["mode"] == Execution.Mode.SYNC and not execution.is_finished:
            execution = execution_wait(execution_id=execution.id, timeout_s=_wait_s(data))
        elif not result.created:
            # A replay answers with the row as it is now; a new async execution as it was
            # accepted, from the row just written, without reading it back.
            execution = execution_get(execution_id=execution.id)
        finished = data["mode"] == Execution.Mode.SYNC and execution.is_finished
        body = ExecutionSerializer(execution, context={"request": request}).data
        headers = {} if result.created else {"Idempotent-Replayed": "true"}
        if finished:
            return Response(body, status=status.HTTP_200_OK, headers=headers)
        headers["Location"] = body["url"]
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)


def _batch_item(item: Any) -> BatchItem:
    """One batch item's shape checked on its own, so a bad item refuses only itself."""
    if not isinstance(item, dict):
        return BatchItem(
            error=InvalidRequest(
                errors={"non_field_errors": field_error("invalid", "Each item must be an object.")}
            )
        )
    serializer = ExecutionItemSerializer(data=item)
    if not serializer.is_valid():
        return BatchItem(error=InvalidRequest(errors=serializer.errors))
    return BatchItem(request={name: serializer.validated_data[name] for name in ITEM_FIELDS})


class ExecuteBatchView(APIView):
    """Run several requests at once; each item is validated and answered on its own."""

    serializer_class = BatchRequestSerializer

    @extend_schema(
        operation_id="dspy_execute_batch",
        summary="Run several signatures at once",
        description=(
            "Each item is an execute request, validated and answered on its own: the answer "
            "lists, in order, each item's execution or its error (with the status it would "
            "have had alone). Item `i` takes the idempotency key `<key>#<i>`. `sync` waits up "
            "to `timeout_s` for every accepted item."
        ),
        request=BatchRequestSerializer,
        parameters=[_idempotency_parameter],
        examples=[
            OpenApiExample(
                "Two questions, waited for",
                request_only=True,
                value={
                    "items": [
                        {"signature": "qa", "inputs": _QUESTION},
                        {
                            "signature": "qa",
                            "version": 1,
                            "inputs": {"question": "What is the capital of Italy?"},
                            "config": {"max_tokens": 32},
                        },
                    ],
                    "timeout_s": 60,
                },
            ),
            OpenApiExample(
                "One accepted, one refused",
                response_only=True,
                status_codes=["200"],
                value={
                    "batch_id": "9d2e7f64-1b3a-4c5d-8e6f-7a8b9c0d1e2f",
                    "items": [
                        {
                            "index": 0,
                            "execution": _SUCCEEDED
                            | {"batch_id": "9d2e7f64-1b3a-4c5d-8e6f-7a8b9c0d1e2f"},
                        },
                        {
                            "index": 1,
                            "error": {
                                "code": "signature_not_found",
                                "message": "No signature named 'qa_v2'.",
                                "errors": {},
                            },
                            "status": 404,
                        },
                    ],
                },
            ),
        ],
        responses={
            200: OpenApiResponse(
                BatchResultSerializer,
                description=(
                    "Nothing left pending: every accepted item finished (sync), or every item "
                    "was rejected. Each item has either `execution` or `error`."
                ),
            ),
            202: OpenApiResponse(
                BatchResultSerializer,
                description="Some accepted items are still queued or running.",
            ),
        },
        tags=["executions"],
    )
    def post(self, request):
        serializer = BatchRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = execution_create_batch(
            items=[_batch_item(item) for item in data["items"]],
            mode=data["mode"],
            wait_s=_wait_s(data),
            idempotency_key=_idempotency_key(request),
            **_client(request),
        )
        context = {"request": request}
        items = [
            {
                "index": outcome.index,
                "execution": ExecutionSerializer(outcome.execution, context=context).data,
            }
            if outcome.execution
            else {
                "index": outcome.index,
                "error": error_body(
                    outcome.error.code, outcome.error.message, outcome.error.errors
                ),
                "status": outcome.error.status_code,
            }
            for outcome in result.items
        ]
        http_status = status.HTTP_202_ACCEPTED if result.pending else status.HTTP_200_OK
        return Response({"batch_id": result.batch_id, "items": items}, status=http_status)


class ExecutionListView(generics.ListAPIView):
    """Executions, newest first, filtered, paged by cursor."""

    serializer_class = ExecutionSerializer
    filterset_class = ExecutionFilter
    # The list grows with every request served: pages by position, with no count.
    pagination_class = KeysetPagination

    def get_queryset(self):
        return execution_list(api_key=_client(self.request)["api_key"])

    @extend_schema(
        summary="List executions",
        description=(
            "Executions, newest first (by `queued_at`, then `id`), filtered. An API key sees "
            "only the executions it created; a staff session sees all of them.\n\n"
            "Paged by cursor: follow `next` (older executions) and `previous` (newer ones) "
            "as given; `page_size` (alias `limit`) sets the rows per page. No page counts "
            "the matching executions (that would cost as much as reading them all), and "
            "`offset` is refused: each page costs the same however deep, and executions "
            "created while a client pages are neither skipped nor repeated."
        ),
        tags=["executions"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ExecutionDetailView(generics.RetrieveAPIView):
    """One execution: status, outputs, error, provider used, timings, metrics, attempts."""

    serializer_class = ExecutionDetailSerializer
    lookup_field = "id"

    def get_queryset(self):
        return execution_list(api_key=_client(self.request)["api_key"])

    def get_object(self):
        self.kwargs[self.lookup_field] = _uuid(self.kwargs[self.lookup_field])
        return super().get_object()

    @extend_schema(
        summary="Get an execution",
        description=(
            "One execution: status, outputs, error, provider used, timings, metrics, and every "
            "provider call it made (`provider_attempts`)."
        ),
        parameters=[_execution_id_parameter],
        responses={
            200: ExecutionDetailSerializer,
            404: error_response("No such execution (or not one this API key created)."),
        },
        tags=["executions"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ExecutionCancelView(APIView):
    """Cancel a queued execution."""

    serializer_class = ExecutionSerializer

    @extend_schema(
        operation_id="executions_cancel",
        summary="Cancel a queued execution",
        description="Only a queued execution can be cancelled; a running one finishes.",
        request=None,
        parameters=[_execution_id_parameter],
        responses={
            200: ExecutionSerializer,
            404: error_response("No such execution (or not one this API key created)."),
            409: error_response("Not queued any more."),
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


class ExecutionRerunView(APIView):
    """Run an execution again, as a new execution linked to it."""

    serializer_class = RerunRequestSerializer

    @extend_schema(
        operation_id="executions_rerun",
        summary="Re-run an execution",
        description=(
            "Queues a new execution of the same signature with the same inputs and generation "
            "settings (async: poll its Location), optionally on another `provider` or at "
            "another `version` (a number or an alias). The new execution names the original "
            "in `rerun_of`; the original is never changed. An API key may re-run the "
            "executions it created."
        ),
        request=RerunRequestSerializer,
        parameters=[_rerun_id_parameter, _location_header],
        responses={
            202: OpenApiResponse(ExecutionSerializer, description="The new execution, queued."),
            400: error_response(
                "The body is invalid, the provider is disabled, or the inputs or settings do "
                "not fit the version asked for."
            ),
            404: error_response(
                "No such execution (or not one this API key created), or an unknown provider "
                "or version."
            ),
            503: error_response("The queue is full."),
        },
        examples=[
            OpenApiExample("The same request again", request_only=True, value={}),
            OpenApiExample(
                "On another provider, at a pinned version",
                request_only=True,
                value={"provider": "local-default", "version": 1},
            ),
            OpenApiExample(
                "Queued",
                response_only=True,
                status_codes=["202"],
                value=_QUEUED | {"id": _RERUN_ID, "url": _RERUN_URL, "rerun_of": _EXECUTION_ID},
            ),
        ],
        tags=["executions"],
    )
    def post(self, request, id):
        client = _client(request)
        try:
            execution = execution_get(execution_id=_uuid(id), api_key=client["api_key"])
        except Execution.DoesNotExist:
            raise Http404 from None
        serializer = RerunRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = execution_rerun(execution=execution, **serializer.validated_data, **client)
        rerun = execution_get(execution_id=result.execution.id)
        body = ExecutionSerializer(rerun, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})
