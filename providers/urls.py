"""API routes of the providers app, mounted under /api/v1/."""

from django.urls import path

from providers.api import HardwareApi, ProviderDetailApi, ProviderListCreateApi

urlpatterns = [
    path("providers/", ProviderListCreateApi.as_view(), name="providers"),
    # Before the detail route: "hardware" is a reserved provider name.
    path("providers/hardware/", HardwareApi.as_view(), name="providers-hardware"),
    path("providers/<str:name>/", ProviderDetailApi.as_view(), name="provider-detail"),
]
