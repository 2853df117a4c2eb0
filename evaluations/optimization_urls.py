"""Routes of optimization runs (mounted by evaluations.urls under /api/v1/)."""

from django.urls import path

from evaluations import optimization_api

urlpatterns = [
    path(
        "optimizations/",
        optimization_api.OptimizationListApi.as_view(),
        name="evaluations-optimizations",
    ),
    path(
        "optimizations/optimizers/",
        optimization_api.OptimizerCatalogueApi.as_view(),
        name="evaluations-optimizers",
    ),
    path(
        "optimizations/<int:run_id>/",
        optimization_api.OptimizationDetailApi.as_view(),
        name="evaluations-optimization-detail",
    ),
    path(
        "optimizations/<int:run_id>/cancel/",
        optimization_api.OptimizationCancelApi.as_view(),
        name="evaluations-optimization-cancel",
    ),
    path(
        "optimizations/<int:run_id>/promote/",
        optimization_api.OptimizationPromoteApi.as_view(),
        name="evaluations-optimization-promote",
    ),
]
