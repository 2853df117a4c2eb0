"""REST API of provider configurations and the hardware report (mounted under /api/v1/).

Provider configurations and the hardware report are for staff with the model's permissions
(`providers.view_provider` to read); any client may list the providers it can use
(`/providers/available/`: names and kinds). The API key of an `openai` provider never appears:
only the name of its environment variable and whether it is set.
"""

from typing import Any

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    OpenApiTypes,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, serializers
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import ModelPermissionsWithView
from core.api.schema import error_response
from providers import selectors, services
from providers.lms import provider_api_key_configured
from providers.models import PROVIDER_FIELDS, Provider


class FallbackNamesField(serializers.ListField):
    """The ordered fallback list as provider names (read from the prefetched links)."""

    def get_attribute(self, provider: Provider) -> list[str]:
        return [link.fallback.name for link in provider.fallback_links.all()]


class PoolMemberSerializer(serializers.Serializer):
    provider = serializers.CharField(help_text="The member's name (a provider that is no pool).")
    weight = serializers.IntegerField(
        min_value=1,
        max_value=1000,
        default=1,
        help_text="Its share under weighted round robin; least outstanding divides by it.",
    )


class PoolMembersField(serializers.ListField):
    """A pool's members in order, as {provider, weight} (read from the prefetched links)."""

    child = PoolMemberSerializer()

    def get_attribute(self, provider: Provider) -> list[dict[str, Any]]:
        return [
            {"provider": link.member.name, "weight": link.weight}
            for link in provider.pool_members.all()
        ]


class ProviderSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Provider
        fields = ["name", "kind"]
        read_only_fields = fields


class ProviderSerializer(serializers.ModelSerializer):
    fallbacks = FallbackNamesField(
        child=serializers.CharField(),
        required=False,
        help_text="Names of the providers to try, in order, when this one fails.",
    )
    members = PoolMembersField(
        required=False,
        help_text=(
            "pool: its members in order, each a provider with a weight; each call goes to one "
            "member picked by `policy` among those whose breaker admits calls."
        ),
    )
    api_key_configured = serializers.SerializerMethodField(
        help_text="Whether the environment variable named by api_key_env is set on the server."
    )

    class Meta:
        model = Provider
        fields = [
            *PROVIDER_FIELDS,
            "api_key_configured",
            "fallbacks",
            "members",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def get_api_key_configured(self, provider: Provider) -> bool:
        return bool(provider_api_key_configured(provider=provider))

    def validate_fallbacks(self, names: list[str]) -> list[Provider]:
        found = {provider.name: provider for provider in Provider.objects.filter(name__in=names)}
        missing = [name for name in names if name not in found]
        if missing:
            raise serializers.ValidationError(f"Unknown providers: {', '.join(missing)}.")
        return [found[name] for name in names]

    def validate_members(self, members: list[dict[str, Any]]) -> list[tuple[Provider, int]]:
        # A partial update does not enforce the members' own required fields.
        if any("provider" not in member for member in members):
            raise serializers.ValidationError("Each member needs its provider.")
        names = [member["provider"] for member in members]
        found = {provider.name: provider for provider in Provider.objects.filter(name__in=names)}
        missing = [name for name in names if name not in found]
        if missing:
            raise serializers.ValidationError(f"Unknown providers: {', '.join(missing)}.")
        return [(found[member["provider"]], member.get("weight", 1)) for member in members]

    # The provider's rules are checked once, by the services (`full_clean`, and the fallback
    # graph under its lock); their errors reach the client through the API's error handler.
    def create(self, validated_data: dict[str, Any]) -> Provider:
        return services.provider_create(**validated_data)

    def update(self, provider: Provider, validated_data: dict[str, Any]) -> Provider:
        fallbacks = validated_data.pop("fallbacks", None)
        members = validated_data.pop("members", None)
        return services.provider_update(
            provider=provider, data=validated_data, fallbacks=fallbacks, members=members
        )


_NAME_PARAMETER = OpenApiParameter(
    "name",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The provider's name.",
    examples=[OpenApiExample("remote-vllm", value="remote-vllm")],
)
_UNKNOWN_PROVIDER = error_response("Unknown provider.")
_WRITE_FORBIDDEN = error_response(
    "Needs the provider model permission (`providers.add_provider`, `change_provider`, "
    "`delete_provider`); an API key may only read providers."
)
_INVALID_PROVIDER = error_response(
    "The configuration is invalid for its kind (a missing model directory, base URL or "
    "engine, an unset API key variable), the name is taken or reserved, or the fallbacks are "
    "unknown or form a cycle, or a pool's members are unknown, pools themselves or run in "
    "different clusters; each problem keyed by its field."
)
_REMOTE = {
    "name": "remote-vllm",
    "kind": "openai",
    "model": "Qwen/Qwen2.5-7B-Instruct",
    "base_url": "http://vllm:8000/v1",
    "max_tokens": 512,
    "temperature": 0.0,
    "top_p": 1.0,
    "timeout_s": 120.0,
    "adapter": "chat",
    "enabled": True,
    "fallbacks": ["local-default"],
}
_POOL = {
    "name": "vllm-pool",
    "kind": "pool",
    "policy": "least_outstanding",
    "members": [
        {"provider": "vllm-a", "weight": 1},
        {"provider": "vllm-b", "weight": 1},
        {"provider": "vllm-c", "weight": 2},
    ],
    "fallbacks": ["local-default"],
}
_PROVIDER = _REMOTE | {
    "hardware_optimization": True,
    "api_key_env": "",
    "engine_path": "",
    "api_key_configured": False,
    "policy": "least_outstanding",
    "members": [],
    "created_at": "2026-01-05T10:00:00.000000Z",
    "updated_at": "2026-01-05T10:00:00.000000Z",
}


@extend_schema_view(
    get=extend_schema(
        summary="List providers",
        description="Provider configurations by name, filtered by kind or enabled state.",
    ),
    post=extend_schema(
        summary="Create a provider",
        description=(
            "A provider of one kind: `mlx` (a local model directory), `openai` (an "
            "OpenAI-compatible endpoint; its key is read from the environment variable "
            "`api_key_env` names), `custom` (an engine class) or `pool` (no model of its own: "
            "`members`, each an existing provider with a weight, share its calls by `policy`: "
            "`least_outstanding`, `weighted_round_robin` or `power_of_two_choices`). "
            "`fallbacks` are tried in order when it fails (for a pool: once no member can "
            "take the call)."
        ),
        responses={201: ProviderSerializer, 400: _INVALID_PROVIDER, 403: _WRITE_FORBIDDEN},
        examples=[
            OpenApiExample(
                "An OpenAI-compatible endpoint falling back to the local model",
                request_only=True,
                value=_REMOTE
                | {
                    "name": "remote-llama",
                    "model": "llama-3.1-8b-instruct",
                    "base_url": "http://llm.internal:8080/v1",
                    "timeout_s": 60.0,
                },
            ),
            OpenApiExample("A pool of three replicas of one model", request_only=True, value=_POOL),
            OpenApiExample("Created", response_only=True, status_codes=["201"], value=_PROVIDER),
        ],
    ),
)
class ProviderListCreateApi(generics.ListCreateAPIView):
    serializer_class = ProviderSerializer
    permission_classes = [IsAuthenticated, ModelPermissionsWithView]
    queryset = selectors.provider_list(members=True)
    filterset_fields = ["kind", "enabled"]


@extend_schema_view(
    get=extend_schema(
        summary="Get a provider",
        description="One provider's configuration and its ordered fallbacks.",
        parameters=[_NAME_PARAMETER],
        responses={200: ProviderSerializer, 404: _UNKNOWN_PROVIDER},
        examples=[OpenApiExample("A provider", response_only=True, value=_PROVIDER)],
    ),
    put=extend_schema(
        summary="Replace a provider's configuration",
        description=(
            "The configuration as a whole: `name`, `kind` and `model` are required; the "
            "settings left out (`fallbacks` included) keep their values."
        ),
        parameters=[_NAME_PARAMETER],
        responses={
            200: ProviderSerializer,
            400: _INVALID_PROVIDER,
            403: _WRITE_FORBIDDEN,
            404: _UNKNOWN_PROVIDER,
        },
        examples=[OpenApiExample("The whole configuration", request_only=True, value=_REMOTE)],
    ),
    patch=extend_schema(
        summary="Change some of a provider's settings",
        description="Only the settings given change; the rest are kept.",
        parameters=[_NAME_PARAMETER],
        responses={
            200: ProviderSerializer,
            400: _INVALID_PROVIDER,
            403: _WRITE_FORBIDDEN,
            404: _UNKNOWN_PROVIDER,
        },
        examples=[
            OpenApiExample("Take it out of service", request_only=True, value={"enabled": False}),
            OpenApiExample(
                "A longer timeout and another fallback order",
                request_only=True,
                value={"timeout_s": 300.0, "fallbacks": ["local-default"]},
            ),
        ],
    ),
)
class ProviderDetailApi(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = ProviderSerializer
    permission_classes = [IsAuthenticated, ModelPermissionsWithView]
    queryset = selectors.provider_list(members=True)
    lookup_field = "name"

    @extend_schema(
        summary="Delete a provider",
        description=(
            "Deletes the provider and the fallback links to and from it; refused while "
            "recorded executions reference it (disable it instead)."
        ),
        parameters=[_NAME_PARAMETER],
        responses={
            204: OpenApiResponse(description="Deleted."),
            403: _WRITE_FORBIDDEN,
            404: _UNKNOWN_PROVIDER,
            409: error_response("Recorded executions reference it."),
        },
    )
    def delete(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().delete(request, *args, **kwargs)

    def perform_destroy(self, provider: Provider) -> None:
        services.provider_delete(provider=provider)


class AvailableProvidersApi(generics.ListAPIView):
    """The providers a client may name in an execution: enabled ones, by name and kind only
    (their configuration is for staff)."""

    serializer_class = ProviderSummarySerializer
    permission_classes = [IsAuthenticated]
    pagination_class = None
    filter_backends: list = []

    def get_queryset(self):
        return Provider.objects.filter(enabled=True).order_by("name").only("name", "kind")

    @extend_schema(
        operation_id="providers_available",
        summary="List the providers a client may use",
        responses={200: ProviderSummarySerializer(many=True)},
        examples=[
            # A list view's example is one item; the schema lists it.
            OpenApiExample(
                "The default provider",
                response_only=True,
                value={"name": "local-default", "kind": "mlx"},
            )
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class HardwareApi(APIView):
    """The machine and MLX backend this server runs local models on (staff only: it
    describes the server)."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="providers_hardware",
        summary="Describe the machine local models run on",
        responses={
            200: inline_serializer(
                "HardwareReport",
                {
                    "os": serializers.CharField(help_text="`Linux`, `Darwin`, ..."),
                    "os_release": serializers.CharField(),
                    "machine": serializers.CharField(help_text="`x86_64`, `arm64`, ..."),
                    "apple_silicon": serializers.BooleanField(),
                    "mlx_backend": serializers.ChoiceField(choices=["metal", "cuda", "cpu"]),
                    "mlx_version": serializers.CharField(),
                    "mlx_lm_version": serializers.CharField(allow_null=True),
                    "memory_total_bytes": serializers.IntegerField(),
                    "memory_available_bytes": serializers.IntegerField(),
                    "cpu_count": serializers.IntegerField(),
                    "fast_blas_in_use": serializers.BooleanField(
                        help_text="Whether MLX's CPU kernels get a fast BLAS in this process."
                    ),
                    "blas_library": serializers.CharField(
                        allow_null=True, help_text="The BLAS MLX calls, when known."
                    ),
                    "fast_blas_installed": serializers.CharField(
                        allow_null=True,
                        help_text="The path of an installed OpenBLAS to preload (Linux).",
                    ),
                    "fast_blas_package": serializers.CharField(
                        allow_null=True, help_text="The package that provides it (Linux)."
                    ),
                    "cpu_optimizations": serializers.ListField(
                        child=serializers.CharField(),
                        help_text="What a local model load applies on this machine.",
                    ),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        from providers.mlx.hardware import hardware_report

        return Response(hardware_report())
