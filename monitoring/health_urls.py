"""Health endpoints live at the site root, outside the versioned API and its authentication."""

from django.urls import path

from monitoring import health

urlpatterns = [
    path("health/live", health.LiveView.as_view(), name="health-live"),
    path("health/ready", health.ReadyView.as_view(), name="health-ready"),
]
