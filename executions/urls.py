"""API routes of the executions app, mounted under /api/v1/."""

from django.urls import path

from executions import api

urlpatterns = [
    path("dspy/execute", api.ExecuteView.as_view(), name="dspy-execute"),
    path("dspy/execute/batch", api.ExecuteBatchView.as_view(), name="dspy-execute-batch"),
    path("executions", api.ExecutionListView.as_view(), name="execution-list"),
    path("executions/<str:id>", api.ExecutionDetailView.as_view(), name="execution-detail"),
    path("executions/<str:id>/cancel", api.ExecutionCancelView.as_view(), name="execution-cancel"),
    path("executions/<str:id>/rerun", api.ExecutionRerunView.as_view(), name="execution-rerun"),
]
