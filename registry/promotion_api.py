"""REST API of promotions: moving an alias to a version only when its score is better
(`registry.services.promotion`). Mounted under /api/v1/ by registry.promotion_urls."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import DjangoModelPermissions, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.schema import error_response
from registry import selectors
from registry.api import _ALIAS_PARAMETER, _NAME_PARAMETER, RegistryApi
from registry.models import DatasetSplit, Promotion
from registry.services.promotion import FORCE_PERMISSION, version_promote
from registry.specs import NAME_MAX_LENGTH


class PromotionPermissions(DjangoModelPermissions):
    # A promotion moves an alias: it needs the alias permissions as well as its own.
    perms_map = DjangoModelPermissions.perms_map | {
        "POST": [
            "%(app_label)s.add_%(model_name)s",
            "registry.add_alias",
            "registry.change_alias",
        ],
    }


class PromoteRequestSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, help_text="The version to promote.")
    dataset = serializers.CharField(
        max_length=NAME_MAX_LENGTH,
        help_text="The dataset (by name) whose current content the scores must be on.",
    )
    split = serializers.ChoiceField(choices=DatasetSplit.choices, default=DatasetSplit.DEV)
    metric = serializers.CharField(max_length=200, help_text="The metric the scores used.")
    force = serializers.BooleanField(
        default=False,
        help_text=f"Move the alias even when the score is missing or not better (needs "
        f"`{FORCE_PERMISSION}`); recorded as forced.",
    )
    reason = serializers.CharField(default="", allow_blank=True, max_length=2000)


class PromotionSerializer(serializers.ModelSerializer):
    signature = serializers.CharField(source="signature.name")
    alias = serializers.CharField(source="alias_name")
    from_version = serializers.IntegerField(source="from_version.number", allow_null=True)
    to_version = serializers.IntegerField(source="to_version.number")
    promoted_by = serializers.SerializerMethodField()

    class Meta:
        model = Promotion
        fields = [
            "signature",
            "alias",
            "from_version",
            "to_version",
            "from_score",
            "to_score",
            "dataset_hash",
            "split",
            "metric",
            "forced",
            "reason",
            "promoted_by",
            "promoted_at",
        ]

    def get_promoted_by(self, promotion: Promotion) -> str | None:
        return promotion.promoted_by.get_username() if promotion.promoted_by else None


class PromoteApi(RegistryApi):
    queryset = Promotion.objects.all()
    serializer_class = PromotionSerializer
    permission_classes = [IsAuthenticated, PromotionPermissions]

    @extend_schema(
        operation_id="registry_aliases_promote",
        summary="Promote a version to an alias when it scores better",
        description=(
            "Moves the alias to `version` only when the version's newest score on the dataset's "
            "current content, `split` and `metric` beats the score of the version the alias "
            "points at now (strictly). Both scores are recorded in the promotion; with "
            "`force` an editor moves it anyway."
        ),
        parameters=[_NAME_PARAMETER, _ALIAS_PARAMETER],
        request=PromoteRequestSerializer,
        responses={
            201: PromotionSerializer,
            400: error_response("The body or the alias name is invalid."),
            403: error_response(
                "Needs `registry.add_promotion`, `registry.add_alias` and "
                f"`registry.change_alias` (and `{FORCE_PERMISSION}` to force)."
            ),
            404: error_response("Unknown signature, version or dataset."),
            409: error_response(
                "`score_missing`, `not_better` (both figures in the message) or "
                "`already_promoted`: nothing changed."
            ),
        },
        examples=[
            OpenApiExample(
                "Promote version 2 on its dev score",
                request_only=True,
                value={"version": 2, "dataset": "starter", "split": "dev", "metric": "exact_match"},
            ),
            OpenApiExample(
                "Forced by an editor",
                request_only=True,
                value={
                    "version": 2,
                    "dataset": "starter",
                    "split": "dev",
                    "metric": "exact_match",
                    "force": True,
                    "reason": "Roll back: version 1 quotes its instructions.",
                },
            ),
        ],
    )
    def post(self, request: Request, name: str, alias: str) -> Response:
        """Promote a version to an alias when it scores better."""
        serializer = PromoteRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        signature = self.signature()
        version = selectors.signature_version_get(signature=signature, number=data["version"])
        dataset = selectors.dataset_get(signature=signature, name=data["dataset"])
        promotion = version_promote(
            signature=signature,
            version=version,
            alias=alias,
            dataset_hash=dataset.content_hash,
            split=data["split"],
            metric=data["metric"],
            force=data["force"],
            reason=data["reason"],
            user=request.user,
        )
        return Response(PromotionSerializer(promotion).data, status=status.HTTP_201_CREATED)
