"""REST API of provider configurations and the hardware report (mounted under /api/v1/).

The API key of an `openai` provider never appears: only the name of its environment variable
and whether that variable is set in the server's environment.
"""

import os
from typing import Any

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import generics, serializers
from rest_framework.permissions import DjangoModelPermissions, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schema import error_response
from providers import selectors, services
from providers.models import PROVIDER_FIELDS, Provider


class FallbackNamesField(serializers.ListField):
    """The ordered fallback list as provider names (read from the prefetched links)."""

    def get_attribute(self, provider: Provider) -> list[str]:
        return [link.fallback.name for link in provider.fallback_links.all()]


class ProviderSerializer(serializers.ModelSerializer):
    fallbacks = FallbackNamesField(
        child=serializers.CharField(),
        required=False,
        help_text="Names of the providers to try, in order, when this one fails.",
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
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def get_api_key_configured(self, provider: Provider) -> bool:
        return bool(provider.api_key_env) and bool(os.environ.get(provider.api_key_env))

    def validate_fallbacks(self, names: list[str]) -> list[Provider]:
        found = {provider.name: provider for provider in Provider.objects.filter(name__in=names)}
        missing = [name for name in names if name not in found]
        if missing:
            raise serializers.ValidationError(f"Unknown providers: {', '.join(missing)}.")
        return [found[name] for name in names]

    # The provider's rules are checked once, by the services (`full_clean`, and the fallback
    # graph under its lock); their errors reach the client through the API's error handler.
    def create(self, validated_data: dict[str, Any]) -> Provider:
        return services.provider_create(**validated_data)

    def update(self, provider: Provider, validated_data: dict[str, Any]) -> Provider:
        fallbacks = validated_data.pop("fallbacks", None)
        return services.provider_update(provider=provider, data=validated_data, fallbacks=fallbacks)


class ProviderListCreateApi(generics.ListCreateAPIView):
    serializer_class = ProviderSerializer
    permission_classes = [IsAuthenticated, DjangoModelPermissions]
    queryset = selectors.provider_list()
    filterset_fields = ["kind", "enabled"]


class ProviderDetailApi(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = ProviderSerializer
    permission_classes = [IsAuthenticated, DjangoModelPermissions]
    queryset = selectors.provider_list()
    lookup_field = "name"

    @extend_schema(responses={204: None, 409: error_response("Executions reference it.")})
    def delete(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().delete(request, *args, **kwargs)

    def perform_destroy(self, provider: Provider) -> None:
        services.provider_delete(provider=provider)


class HardwareApi(APIView):
    """The machine and MLX backend this server runs local models on."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, operation_id="providers_hardware")
    def get(self, request: Request) -> Response:
        from providers.mlx.hardware import hardware_report

        return Response(hardware_report())
