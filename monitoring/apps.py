from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self) -> None:
        # Connects the receivers that count the apps' events into the Prometheus metrics.
        from monitoring import receivers  # noqa: F401
        from monitoring.processes import process_reporter_start_if_service

        # Imported here, not at module level: models must be ready first.
        process_reporter_start_if_service()


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """`django.contrib.admin` with the console's site as the default `admin.site`; named in
    INSTALLED_APPS in its place."""

    default = False

    default_site = "monitoring.sites.ConsoleAdminSite"
