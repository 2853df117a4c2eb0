"""API routes of the registry app, mounted under /api/v1/."""

from django.urls import include, path

from registry import api

urlpatterns = [
    path("signatures/", api.SignatureListApi.as_view(), name="registry-signatures"),
    path(
        "signatures/<str:name>/",
        api.SignatureDetailApi.as_view(),
        name="registry-signature-detail",
    ),
    path(
        "signatures/<str:name>/versions/",
        api.VersionListApi.as_view(),
        name="registry-versions",
    ),
    path(
        "signatures/<str:name>/versions/<int:number>/",
        api.VersionDetailApi.as_view(),
        name="registry-version-detail",
    ),
    path(
        "signatures/<str:name>/resolve/",
        api.VersionResolveApi.as_view(),
        name="registry-version-resolve",
    ),
    path(
        "signatures/<str:name>/aliases/",
        api.AliasListApi.as_view(),
        name="registry-aliases",
    ),
    path(
        "signatures/<str:name>/aliases/<str:alias>/",
        api.AliasDetailApi.as_view(),
        name="registry-alias-detail",
    ),
    path("", include("registry.dataset_urls")),
    path("", include("registry.promotion_urls")),
]
