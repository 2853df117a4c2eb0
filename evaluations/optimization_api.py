"""REST API of optimization runs (mounted under /api/v1/optimizations/).

Permissions are the evaluation runs' (like the registry's writes): an API key or a user with
`evaluations.view_optimizationrun` reads; creating needs `evaluations.add_optimizationrun`,
cancelling `evaluations.change_optimizationrun`; promoting a run's result is a promotion
(`registry.add_promotion`, `registry.add_alias`, `registry.change_alias`). Views are thin:
a serializer checks the request's shape, a service of `evaluations.services.optimize` does the
work, a serializer renders the answer.
"""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.schema import JSONObjectField, error_response
from evaluations.evaluation_api import EvaluationChangePermissions, EvaluationPermissions
from evaluations.models import OptimizationRun, Optimizer, RunStatus
from evaluations.services.optimize import (
    SEED_MAX,
    optimization_cancel,
    optimization_create_named,
    optimization_get,
    optimization_list,
    optimization_promote,
    optimizer_catalogue,
)
from registry.models import DatasetSplit, Promotion
from registry.promotion_api import PromotionPermissions, PromotionSerializer


class OptimizationCreateSerializer(serializers.Serializer):
    signature = serializers.CharField(help_text="The signature's name.")
    version = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The source version: a number or an alias; omitted: `production`, else the "
        "latest.",
    )
    dataset = serializers.CharField(help_text="The name of one of the signature's datasets.")
    train_split = serializers.ChoiceField(choices=DatasetSplit.choices, default=DatasetSplit.TRAIN)
    dev_split = serializers.ChoiceField(choices=DatasetSplit.choices, default=DatasetSplit.DEV)
    metric = serializers.CharField(max_length=200, help_text="A built-in metric or a dotted path.")
    metric_params = JSONObjectField(required=False, default=dict)
    student = serializers.CharField(help_text="The provider whose model is optimized.")
    teacher = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Optional teacher provider (bootstraps demos; MIPROv2's prompt model).",
    )
    optimizer = serializers.ChoiceField(choices=Optimizer.choices)
    params = JSONObjectField(
        required=False, default=dict, help_text="The optimizer's parameters (see `optimizers`)."
    )
    seed = serializers.IntegerField(required=False, default=0, min_value=0, max_value=SEED_MAX)

    def _object(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return value

    validate_params = _object
    validate_metric_params = _object


class OptimizationSerializer(serializers.ModelSerializer):
    signature = serializers.CharField(source="signature_version.signature.name")
    version = serializers.IntegerField(source="signature_version.number")
    dataset = serializers.CharField(source="dataset.name")
    student = serializers.CharField(source="student_provider.name")
    teacher = serializers.CharField(source="teacher_provider.name", allow_null=True)
    result_version = serializers.IntegerField(source="result_version.number", allow_null=True)
    params = JSONObjectField()
    metric_params = JSONObjectField()
    trajectory = serializers.ListField(
        child=JSONObjectField(),
        help_text="Scores in order: the source version, each trial, the result version "
        "(`label`, `score`, `examples`, `full`: scored on the whole dev split).",
    )
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = OptimizationRun
        fields = [
            "id",
            "signature",
            "version",
            "dataset",
            "dataset_hash",
            "train_split",
            "dev_split",
            "metric",
            "metric_params",
            "student",
            "teacher",
            "optimizer",
            "params",
            "seed",
            "status",
            "stage",
            "trials_done",
            "trials_total",
            "baseline_score",
            "best_score",
            "trajectory",
            "result_version",
            "attempts",
            "cancel_requested",
            "error_code",
            "error_message",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_created_by(self, run: OptimizationRun) -> str | None:
        return run.created_by.get_username() if run.created_by else None


class OptimizerSerializer(serializers.Serializer):
    name = serializers.ChoiceField(choices=Optimizer.choices)
    label = serializers.CharField(help_text="DSPy's name of the optimizer.")
    needs_teacher = serializers.BooleanField()
    params = serializers.DictField(
        child=JSONObjectField(),
        help_text="Each parameter: `type`, `default`, `help`, and `minimum`, `maximum`, "
        "`choices`, `nullable` where they apply.",
    )


class OptimizationPromoteSerializer(serializers.Serializer):
    force = serializers.BooleanField(default=False, help_text="Move it even when not better.")
    reason = serializers.CharField(default="", allow_blank=True, max_length=2000)


_ID_PARAMETER = OpenApiParameter(
    "run_id",
    int,
    OpenApiParameter.PATH,
    description="The optimization run's id.",
    examples=[OpenApiExample("1", value=1)],
)
_NOT_FOUND = error_response("No such optimization run.")


class OptimizationApi(generics.GenericAPIView):
    queryset = OptimizationRun.objects.all()
    permission_classes = [EvaluationPermissions]
    serializer_class = OptimizationSerializer
    filter_backends: list = []


class OptimizationListApi(OptimizationApi):
    @extend_schema(
        operation_id="optimizations_list",
        summary="List optimization runs",
        parameters=[
            OpenApiParameter("signature", str, description="Runs of this signature."),
            OpenApiParameter("status", str, enum=RunStatus.values, description="Runs in it."),
        ],
        responses={200: OptimizationSerializer(many=True), 400: error_response("Bad status.")},
        tags=["optimizations"],
    )
    def get(self, request: Request) -> Response:
        """Optimization runs, newest first."""
        runs = optimization_list(
            signature=request.query_params.get("signature"),
            status=request.query_params.get("status"),
        )
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(OptimizationSerializer(page, many=True).data)

    @extend_schema(
        operation_id="optimizations_create",
        summary="Start an optimization run",
        request=OptimizationCreateSerializer,
        responses={
            202: OptimizationSerializer,
            400: error_response(
                "The body is invalid (`invalid_optimization`, each field in `errors`): a split "
                "without examples, a pool or disabled provider, MIPROv2 without a teacher, "
                "parameters the optimizer does not take, a metric that does not fit."
            ),
            403: error_response(
                "Needs `evaluations.add_optimizationrun`; an API key may only read runs."
            ),
            404: error_response("Unknown signature, version, dataset or provider."),
        },
        examples=[
            OpenApiExample(
                "qa with BootstrapFewShot on its starter dataset",
                request_only=True,
                value={
                    "signature": "qa",
                    "dataset": "starter",
                    "metric": "exact_match",
                    "student": "local-default",
                    "optimizer": "bootstrap_few_shot",
                    "params": {"max_bootstrapped_demos": 4, "max_labeled_demos": 4},
                    "seed": 0,
                },
            )
        ],
        tags=["optimizations"],
    )
    def post(self, request: Request) -> Response:
        """Queue a run; poll it for its stage, trials and best dev score."""
        serializer = OptimizationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = optimization_create_named(**serializer.validated_data, user=request.user)
        return Response(
            OptimizationSerializer(optimization_get(run_id=run.pk)).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"{request.path}{run.pk}/"},
        )


class OptimizerCatalogueApi(OptimizationApi):
    permission_classes = [IsAuthenticated]
    # A short fixed list, answered whole (the schema must not document a page of it).
    pagination_class = None

    @extend_schema(
        operation_id="optimizations_optimizers",
        summary="List the optimizers and their parameters",
        responses={200: OptimizerSerializer(many=True)},
        tags=["optimizations"],
    )
    def get(self, request: Request) -> Response:
        """Each optimizer with its parameters (type, default, range) and whether it needs a
        teacher."""
        return Response(OptimizerSerializer(optimizer_catalogue(), many=True).data)


class OptimizationDetailApi(OptimizationApi):
    @extend_schema(
        operation_id="optimizations_retrieve",
        summary="Get an optimization run",
        parameters=[_ID_PARAMETER],
        responses={200: OptimizationSerializer, 404: _NOT_FOUND},
        tags=["optimizations"],
    )
    def get(self, request: Request, run_id: int) -> Response:
        """One run: stage, trials, baseline and best scores, trajectory, result version."""
        return Response(OptimizationSerializer(optimization_get(run_id=run_id)).data)


class OptimizationCancelApi(OptimizationApi):
    permission_classes = [EvaluationChangePermissions]

    @extend_schema(
        operation_id="optimizations_cancel",
        summary="Cancel an optimization run",
        description="A queued run ends at once; a running one at its next example or trial. "
        "A finished run is left as it is.",
        request=None,
        parameters=[_ID_PARAMETER],
        responses={
            200: OptimizationSerializer,
            403: error_response("Needs `evaluations.change_optimizationrun`."),
            404: _NOT_FOUND,
        },
        tags=["optimizations"],
    )
    def post(self, request: Request, run_id: int) -> Response:
        """Cancel a run."""
        run = optimization_cancel(run=optimization_get(run_id=run_id))
        return Response(OptimizationSerializer(optimization_get(run_id=run.pk)).data)


class OptimizationPromoteApi(OptimizationApi):
    queryset = Promotion.objects.all()
    permission_classes = [IsAuthenticated, PromotionPermissions]

    @extend_schema(
        operation_id="optimizations_promote",
        summary="Promote an optimization run's result to production",
        description="Moves `production` to the run's result version when its score on the "
        "run's dataset, dev split and metric beats the current production version's.",
        request=OptimizationPromoteSerializer,
        parameters=[_ID_PARAMETER],
        responses={
            201: PromotionSerializer,
            403: error_response("Needs the promotion permissions (`force`: an editor's)."),
            404: _NOT_FOUND,
            409: error_response(
                "`optimization_not_finished`, `score_missing`, `not_better` or "
                "`already_promoted`: nothing changed."
            ),
        },
        examples=[
            OpenApiExample("Promote when better", request_only=True, value={}),
            OpenApiExample(
                "With a reason for the record",
                request_only=True,
                value={"reason": "BootstrapFewShot on the starter dataset"},
            ),
        ],
        tags=["optimizations"],
    )
    def post(self, request: Request, run_id: int) -> Response:
        """Promote the run's result version."""
        serializer = OptimizationPromoteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        promotion = optimization_promote(
            run=optimization_get(run_id=run_id), **serializer.validated_data, user=request.user
        )
        return Response(PromotionSerializer(promotion).data, status=status.HTTP_201_CREATED)
