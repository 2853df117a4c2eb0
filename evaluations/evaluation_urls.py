"""Routes of evaluation runs (mounted by evaluations.urls under /api/v1/)."""

from django.urls import path

from evaluations import evaluation_api

urlpatterns = [
    path("evaluations/", evaluation_api.EvaluationListApi.as_view(), name="evaluations"),
    # Before the detail route: `compare` is no run id.
    path(
        "evaluations/compare/",
        evaluation_api.EvaluationCompareApi.as_view(),
        name="evaluations-compare",
    ),
    path(
        "evaluations/<str:run_id>/",
        evaluation_api.EvaluationDetailApi.as_view(),
        name="evaluation-detail",
    ),
    path(
        "evaluations/<str:run_id>/results/",
        evaluation_api.EvaluationResultsApi.as_view(),
        name="evaluation-results",
    ),
    path(
        "evaluations/<str:run_id>/cancel/",
        evaluation_api.EvaluationCancelApi.as_view(),
        name="evaluation-cancel",
    ),
]
