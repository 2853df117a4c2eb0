"""The admin site of the toolkit: Django's, whose index opens on the console's dashboard and
which serves the usage page. Installed by `ConsoleAdminConfig` (monitoring/apps.py) in place
of `django.contrib.admin`, as Django documents for overriding the default admin site, so every
app's `admin.site.register` lands here."""

from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse
from django.urls import path

from monitoring.dashboard import console_context, usage_view


class ConsoleAdminSite(AdminSite):
    site_header = "DSPy Toolkit"
    site_title = "DSPy Toolkit"
    index_title = "Operations console"

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().index(
            request, extra_context={**console_context(request), **(extra_context or {})}
        )

    def get_urls(self) -> list:
        usage = path(
            "console/usage/",
            self.admin_view(lambda request: usage_view(request, site=self)),
            name="monitoring_usage",
        )
        return [usage, *super().get_urls()]
