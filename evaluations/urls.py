"""API routes of the evaluations app, mounted under /api/v1/."""

from django.urls import include, path

urlpatterns = [
    path("", include("evaluations.evaluation_urls")),
    path("", include("evaluations.optimization_urls")),
]
