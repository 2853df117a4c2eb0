"""Routes of a signature's datasets (mounted by registry.urls under /api/v1/)."""

from django.urls import path

from registry import dataset_api

urlpatterns = [
    path(
        "signatures/<str:name>/datasets/",
        dataset_api.DatasetListApi.as_view(),
        name="registry-datasets",
    ),
    path(
        "signatures/<str:name>/datasets/<str:dataset>/",
        dataset_api.DatasetDetailApi.as_view(),
        name="registry-dataset-detail",
    ),
    path(
        "signatures/<str:name>/datasets/<str:dataset>/examples/",
        dataset_api.DatasetExamplesApi.as_view(),
        name="registry-dataset-examples",
    ),
    path(
        "signatures/<str:name>/datasets/<str:dataset>/export/",
        dataset_api.DatasetExportApi.as_view(),
        name="registry-dataset-export",
    ),
]
