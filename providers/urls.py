"""API routes of the providers app, mounted under /api/v1/."""

from django.urls import path

from providers.api import (
    AvailableProvidersApi,
    HardwareApi,
    ProviderDetailApi,
    ProviderListCreateApi,
)
from providers.openai_api import ChatCompletionsApi, ModelsApi

urlpatterns = [
    path("providers/", ProviderListCreateApi.as_view(), name="providers"),
    # Before the detail route: "hardware" and "available" are reserved provider names.
    path("providers/hardware/", HardwareApi.as_view(), name="providers-hardware"),
    path("providers/available/", AvailableProvidersApi.as_view(), name="providers-available"),
    path("providers/<str:name>/", ProviderDetailApi.as_view(), name="provider-detail"),
    # Where OpenAI clients look, under their `api_base` (`.../api/v1/openai`): no trailing slash.
    path("openai/chat/completions", ChatCompletionsApi.as_view(), name="openai-chat-completions"),
    path("openai/models", ModelsApi.as_view(), name="openai-models"),
]
