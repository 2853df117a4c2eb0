"""Monitoring's part of the versioned API (`/api/v1/`): reads for clients and operators."""

from django.urls import path

from monitoring import api
from monitoring.provider_health_api import ProviderHealthApi

urlpatterns = [
    path("usage", api.UsageView.as_view(), name="usage"),
    path("providers/<str:name>/health", ProviderHealthApi.as_view(), name="provider-health"),
]
