from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

api_v1 = [
    path("", include("registry.urls")),
    path("", include("providers.urls")),
    path("", include("executions.urls")),
    path("", include("evaluations.urls")),
    path("", include("monitoring.api_urls")),
]

urlpatterns = [
    path("admin/try-it/", include("executions.admin_urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script to allow.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("", include("monitoring.urls")),
]
