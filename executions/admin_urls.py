"""The "Try it" pages, served under the admin site (its login, staff check and context);
`config.urls` includes them before the admin's own URLs."""

from django.contrib import admin
from django.urls import path

from executions.admin_views import try_draft_view, try_version_view

urlpatterns = [
    path(
        "version/<int:pk>/",
        admin.site.admin_view(try_version_view),
        name="executions_try_version",
    ),
    path(
        "draft/<int:signature_pk>/",
        admin.site.admin_view(try_draft_view),
        name="executions_try_draft",
    ),
]
