"""Health probes and metrics live at the site root, outside the versioned API and its
authentication (the metrics have their own allow-list). `/healthz` and `/readyz` are the
names orchestrators (Kubernetes) expect, for the same two probes."""

from django.urls import path

from monitoring import health
from monitoring.metrics import metrics_view

urlpatterns = [
    path("health/live", health.LiveView.as_view(), name="health-live"),
    path("health/ready", health.ReadyView.as_view(), name="health-ready"),
    path("healthz", health.LiveView.as_view(), name="healthz"),
    path("readyz", health.ReadyView.as_view(), name="readyz"),
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]
