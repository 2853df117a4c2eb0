"""REST API of evaluation runs (mounted under /api/v1/evaluations/).

Reading needs an API key, or a staff session with `evaluations.view_evaluationrun`; creating
a run needs `evaluations.add_evaluationrun` and cancelling one
`evaluations.change_evaluationrun` (like the registry's writes: an API key only reads).
Views are thin: a serializer checks the request's shape, a service of
`evaluations.services.evaluate` does the work, a serializer renders the answer; errors come in
the API's one shape.
"""

from typing import Any

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers, status
from rest_framework.permissions import SAFE_METHODS, DjangoModelPermissions
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.authentication import APIKeyClient
from core.api.pagination import MAX_PAGE_SIZE
from core.api.schema import JSONObjectField, error_response
from core.errors import InvalidRequest, field_error
from evaluations.models import EvaluationResult, EvaluationRun, RunStatus
from evaluations.services.evaluate import (
    EvaluationComparison,
    ExampleDifference,
    ResultFilter,
    evaluation_cancel,
    evaluation_compare,
    evaluation_create_named,
    evaluation_get,
    evaluation_list,
    evaluation_progress,
    evaluation_results,
)
from registry.exceptions import VersionNotFound
from registry.models import DatasetSplit

COMPARE_DEFAULT_LIMIT = 100


class EvaluationPermissions(DjangoModelPermissions):
    """API keys read; users need the model's view permission to read, add to create."""

    perms_map = DjangoModelPermissions.perms_map | {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request, view) -> bool:
        if isinstance(request.user, APIKeyClient) and request.method in SAFE_METHODS:
            return True
        return super().has_permission(request, view)


class EvaluationChangePermissions(EvaluationPermissions):
    """Cancelling changes a run: a POST that needs the change permission."""

    perms_map = EvaluationPermissions.perms_map | {"POST": ["%(app_label)s.change_%(model_name)s"]}


# Serializers ----------------------------------------------------------------------------------


class EvaluationCreateSerializer(serializers.Serializer):
    signature = serializers.CharField(help_text="The signature's name.")
    version = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        help_text="A version number or an alias; omitted: `production`, else the latest.",
    )
    dataset = serializers.CharField(help_text="The name of one of the signature's datasets.")
    split = serializers.ChoiceField(choices=DatasetSplit.choices, default=DatasetSplit.DEV)
    provider = serializers.CharField(help_text="The provider the version runs on.")
    metric = serializers.CharField(
        max_length=200, help_text="A built-in metric (`exact_match`, ...) or a dotted path."
    )
    metric_params = JSONObjectField(required=False, default=dict)

    def validate_version(self, value: Any) -> Any:
        if isinstance(value, str) and value.isascii() and value.isdigit():
            if int(value) >= 2**31:
                # Beyond PostgreSQL's integer no version exists (and the query would fail).
                raise VersionNotFound(f"There is no version {value}.")
            return int(value)
        return value


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="Examples whose provider call or metric failed.")
    percent = serializers.FloatField()
    elapsed_s = serializers.FloatField(allow_null=True)
    eta_s = serializers.FloatField(allow_null=True, help_text="Seconds left, while running.")


class EvaluationSerializer(serializers.ModelSerializer):
    signature = serializers.CharField(source="signature_version.signature.name")
    version = serializers.IntegerField(source="signature_version.number")
    dataset = serializers.CharField(source="dataset.name")
    provider = serializers.CharField(source="provider.name")
    metric_params = JSONObjectField()
    progress = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = EvaluationRun
        fields = [
            "id",
            "status",
            "signature",
            "version",
            "dataset",
            "dataset_hash",
            "split",
            "provider",
            "metric",
            "metric_params",
            "score",
            "ci_low",
            "ci_high",
            "progress",
            "input_tokens",
            "output_tokens",
            "attempts",
            "cancel_requested",
            "error_code",
            "error_message",
            "optimization_run",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, run: EvaluationRun) -> dict[str, Any]:
        return ProgressSerializer(evaluation_progress(run)).data


class ResultSerializer(serializers.ModelSerializer):
    inputs = JSONObjectField()
    expected = JSONObjectField(help_text="The expected output values.")
    accepted = JSONObjectField(help_text="Further accepted answers by output field.")
    prediction = JSONObjectField(allow_null=True, help_text="Null when the provider call failed.")

    class Meta:
        model = EvaluationResult
        fields = [
            "position",
            "inputs",
            "expected",
            "accepted",
            "prediction",
            "raw_output",
            "score",
            "error_code",
            "error_message",
            "latency_ms",
            "input_tokens",
            "output_tokens",
        ]


class _SideSerializer(serializers.Serializer):
    prediction = JSONObjectField(allow_null=True)
    score = serializers.FloatField(allow_null=True)
    error_code = serializers.CharField()


class DifferenceSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    inputs = JSONObjectField()
    expected = JSONObjectField()
    change = serializers.ChoiceField(choices=["better", "worse", "same"], help_text="From a to b.")
    a = _SideSerializer()
    b = _SideSerializer()

    def to_representation(self, difference: ExampleDifference) -> dict[str, Any]:
        return {
            "position": difference.position,
            "inputs": difference.inputs,
            "expected": difference.expected,
            "change": difference.change,
            "a": {
                "prediction": difference.a_prediction,
                "score": difference.a_score,
                "error_code": difference.a_error_code,
            },
            "b": {
                "prediction": difference.b_prediction,
                "score": difference.b_score,
                "error_code": difference.b_error_code,
            },
        }


class ComparisonSerializer(serializers.Serializer):
    a = EvaluationSerializer()
    b = EvaluationSerializer()
    compared = serializers.IntegerField(help_text="Examples both runs scored.")
    better = serializers.IntegerField(help_text="Examples b scored higher than a.")
    worse = serializers.IntegerField(help_text="Examples b scored lower than a.")
    differences_total = serializers.IntegerField()
    differences = DifferenceSerializer(many=True, help_text="At most `limit`, by position.")

    def to_representation(self, comparison: EvaluationComparison) -> dict[str, Any]:
        return {
            "a": EvaluationSerializer(comparison.a).data,
            "b": EvaluationSerializer(comparison.b).data,
            "compared": comparison.compared,
            "better": comparison.better,
            "worse": comparison.worse,
            "differences_total": comparison.differences_total,
            "differences": [DifferenceSerializer(d).data for d in comparison.differences],
        }


# Views ----------------------------------------------------------------------------------------

_ID_PARAMETER = OpenApiParameter("run_id", int, OpenApiParameter.PATH, description="The run's id.")
_NOT_FOUND = error_response("No such evaluation run.")
_RUN_EXAMPLE = {
    "id": 12,
    "status": "running",
    "signature": "qa",
    "version": 2,
    "dataset": "starter",
    "dataset_hash": "5f1d...",
    "split": "dev",
    "provider": "local-default",
    "metric": "exact_match",
    "metric_params": {},
    "score": None,
    "ci_low": None,
    "ci_high": None,
    "progress": {
        "done": 40,
        "total": 100,
        "errors": 1,
        "percent": 40.0,
        "elapsed_s": 12.5,
        "eta_s": 18.8,
    },
    "input_tokens": 9600,
    "output_tokens": 120,
    "attempts": 1,
    "cancel_requested": False,
    "error_code": "",
    "error_message": "",
    "optimization_run": None,
    "created_by": "operator",
    "created_at": "2026-12-03T15:00:00Z",
    "started_at": "2026-12-03T15:00:01Z",
    "finished_at": None,
}


class EvaluationApi(generics.GenericAPIView):
    queryset = EvaluationRun.objects.all()
    permission_classes = [EvaluationPermissions]
    serializer_class = EvaluationSerializer
    filter_backends: list = []


class EvaluationListApi(EvaluationApi):
    @extend_schema(
        operation_id="evaluations_list",
        summary="List evaluation runs",
        parameters=[
            OpenApiParameter("signature", str, description="Runs of this signature."),
            OpenApiParameter("status", str, enum=RunStatus.values, description="Runs in it."),
        ],
        responses={200: EvaluationSerializer(many=True), 400: error_response("Unknown status.")},
        tags=["evaluations"],
    )
    def get(self, request: Request) -> Response:
        """Evaluation runs, newest first."""
        runs = evaluation_list(
            signature=request.query_params.get("signature"),
            status=request.query_params.get("status"),
        )
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(EvaluationSerializer(page, many=True).data)

    @extend_schema(
        operation_id="evaluations_create",
        summary="Start an evaluation run",
        request=EvaluationCreateSerializer,
        responses={
            202: EvaluationSerializer,
            400: error_response(
                "The body is invalid, the dataset has no examples in the split, the provider "
                "is disabled, or the metric does not fit the signature (`invalid_metric`)."
            ),
            403: error_response(
                "Needs `evaluations.add_evaluationrun`; an API key may only read runs."
            ),
            404: error_response("Unknown signature, version, dataset or provider."),
        },
        examples=[
            OpenApiExample(
                "qa on its starter dev split",
                request_only=True,
                value={
                    "signature": "qa",
                    "version": "production",
                    "dataset": "starter",
                    "split": "dev",
                    "provider": "local-default",
                    "metric": "exact_match",
                },
            ),
            OpenApiExample("Queued", response_only=True, status_codes=["202"], value=_RUN_EXAMPLE),
        ],
        tags=["evaluations"],
    )
    def post(self, request: Request) -> Response:
        """Queue a run: the workers score every example of the split (poll it for progress)."""
        serializer = EvaluationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = evaluation_create_named(**serializer.validated_data, user=request.user)
        return Response(
            EvaluationSerializer(evaluation_get(run_id=run.pk)).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"{request.path}{run.pk}/"},
        )


class EvaluationDetailApi(EvaluationApi):
    @extend_schema(
        operation_id="evaluations_retrieve",
        summary="Get an evaluation run",
        parameters=[_ID_PARAMETER],
        responses={200: EvaluationSerializer, 404: _NOT_FOUND},
        examples=[OpenApiExample("Running", response_only=True, value=_RUN_EXAMPLE)],
        tags=["evaluations"],
    )
    def get(self, request: Request, run_id: str) -> Response:
        """One run: status, progress (done, total, errors, ETA), score with its 95% interval."""
        return Response(EvaluationSerializer(evaluation_get(run_id=run_id)).data)


class EvaluationResultsApi(EvaluationApi):
    serializer_class = ResultSerializer

    @extend_schema(
        operation_id="evaluations_results",
        summary="List a run's results",
        parameters=[
            _ID_PARAMETER,
            OpenApiParameter(
                "show",
                str,
                enum=ResultFilter.CHOICES,
                description="`wrong`: score below 1 (errors included); `error`: failed ones.",
            ),
        ],
        responses={
            200: ResultSerializer(many=True),
            400: error_response("Unknown `show`."),
            404: _NOT_FOUND,
        },
        tags=["evaluations"],
    )
    def get(self, request: Request, run_id: str) -> Response:
        """Each example's prediction, raw output, score, latency and tokens, by position."""
        results = evaluation_results(
            run=evaluation_get(run_id=run_id),
            show=request.query_params.get("show") or ResultFilter.ALL,
        )
        page = self.paginate_queryset(results)
        return self.get_paginated_response(ResultSerializer(page, many=True).data)


class EvaluationCancelApi(EvaluationApi):
    permission_classes = [EvaluationChangePermissions]

    @extend_schema(
        operation_id="evaluations_cancel",
        summary="Cancel an evaluation run",
        request=None,
        parameters=[_ID_PARAMETER],
        responses={
            200: EvaluationSerializer,
            403: error_response("Needs `evaluations.change_evaluationrun`."),
            404: _NOT_FOUND,
        },
        tags=["evaluations"],
    )
    def post(self, request: Request, run_id: str) -> Response:
        """A queued run ends at once; a running one stops at its next example and keeps its
        results (`cancel_requested` until then). A finished run is returned unchanged."""
        run = evaluation_cancel(run=evaluation_get(run_id=run_id))
        return Response(EvaluationSerializer(evaluation_get(run_id=run.pk)).data)


def _runs(request: Request) -> tuple[EvaluationRun, EvaluationRun]:
    missing = [name for name in ("a", "b") if not request.query_params.get(name)]
    if missing:
        raise InvalidRequest(
            errors={name: field_error("required", "Give a run's id.") for name in missing}
        )
    return (
        evaluation_get(run_id=request.query_params["a"]),
        evaluation_get(run_id=request.query_params["b"]),
    )


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return COMPARE_DEFAULT_LIMIT
    message = f"`limit` must be a whole number from 1 to {MAX_PAGE_SIZE}."
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE_SIZE):
        raise InvalidRequest(errors={"limit": field_error("invalid", message)})
    return int(raw)


class EvaluationCompareApi(EvaluationApi):
    serializer_class = ComparisonSerializer

    @extend_schema(
        operation_id="evaluations_compare",
        summary="Compare two evaluation runs",
        parameters=[
            OpenApiParameter("a", int, required=True, description="The first run's id."),
            OpenApiParameter("b", int, required=True, description="The second run's id."),
            OpenApiParameter(
                "limit",
                int,
                description=f"Differences listed (default {COMPARE_DEFAULT_LIMIT}, "
                f"at most {MAX_PAGE_SIZE}).",
            ),
        ],
        responses={
            200: ComparisonSerializer,
            400: error_response(
                "`a` or `b` missing, a bad `limit`, or runs on different data (`not_comparable`)."
            ),
            404: _NOT_FOUND,
        },
        tags=["evaluations"],
    )
    def get(self, request: Request) -> Response:
        """Two runs on the same data (dataset content hash and split): both scores, and the
        examples where their prediction or score differs."""
        limit = _limit(request)
        a, b = _runs(request)
        comparison = evaluation_compare(a=a, b=b, limit=limit)
        return Response(ComparisonSerializer(comparison).data)
