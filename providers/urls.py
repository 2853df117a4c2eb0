"""API routes of the providers app, mounted under /api/v1/."""

from django.urls import path

from providers.api import (
    AvailableProvidersApi,
    HardwareApi,
    ProviderDetailApi,
    ProviderListCreateApi,
)

urlpatterns = [
    path("providers/", ProviderListCreateApi.as_view(), name="providers"),
    # Before the detail route: "hardware" and "available" are reserved provider names.
    path("providers/hardware/", HardwareApi.as_view(), name="providers-hardware"),
    path("providers/available/", AvailableProvidersApi.as_view(), name="providers-available"),
    path("providers/<str:name>/", ProviderDetailApi.as_view(), name="provider-detail"),
]
