"""Routes of promotions (mounted by registry.urls under /api/v1/)."""

from django.urls import path

from registry import promotion_api

urlpatterns = [
    path(
        "signatures/<str:name>/aliases/<str:alias>/promote/",
        promotion_api.PromoteApi.as_view(),
        name="registry-alias-promote",
    ),
]
