"""The resources page of the admin: the service's processes (role, memory, loaded models,
last heartbeat, alive or gone) and django-q2's view of its clusters and queues.

A read-only admin of `ServiceProcess`; its list page adds the clusters and queue sizes above
the processes. Every figure comes from `monitoring.processes`, in a fixed number of queries.
"""

from pathlib import PurePath

from django.contrib import admin
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyAdminMixin
from monitoring.models import ServiceProcess
from monitoring.processes import (
    cluster_status_list,
    queue_size_list,
    service_process_alive_since,
)

_ALIVE_COLOUR = "#2e7d32"
_GONE_COLOUR = "#c62828"


@admin.register(ServiceProcess)
class ServiceProcessAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    change_list_template = "monitoring/resources_change_list.html"
    list_display = [
        "state",
        "role",
        "cluster",
        "pid",
        "host",
        "rss_mb",
        "models",
        "last_heartbeat",
        "started_at",
    ]
    list_filter = ["role", "cluster", "host"]
    ordering = ["role", "cluster", "host", "pid"]
    list_per_page = 100
    fields = [
        "role",
        "cluster",
        "host",
        "pid",
        "started_at",
        "heartbeat_at",
        "rss_bytes",
        "loaded_models",
    ]
    readonly_fields = fields

    def get_queryset(self, request) -> QuerySet:
        # Every row judged against the same moment, by the database.
        since = service_process_alive_since(now=timezone.now())
        return (
            super()
            .get_queryset(request)
            .annotate(alive=ExpressionWrapper(Q(heartbeat_at__gte=since), BooleanField()))
        )

    def changelist_view(self, request, extra_context=None):
        context = {
            "cluster_statuses": cluster_status_list(),
            "queue_sizes": queue_size_list(),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    @admin.display(description="state", ordering="heartbeat_at")
    def state(self, process: ServiceProcess):
        alive = process.alive
        return format_html(
            '<strong style="color: {}">{}</strong>',
            _ALIVE_COLOUR if alive else _GONE_COLOUR,
            "alive" if alive else "gone",
        )

    @admin.display(description="resident memory", ordering="rss_bytes")
    def rss_mb(self, process: ServiceProcess) -> str:
        if process.rss_bytes is None:
            return "-"
        return f"{process.rss_bytes / 2**20:.1f} MB"

    @admin.display(description="loaded models")
    def models(self, process: ServiceProcess):
        if not process.loaded_models:
            return "-"
        return format_html_join(
            ", ",
            "{} ({} served)",
            (
                (PurePath(model.get("path", "?")).name, model.get("requests_served"))
                for model in process.loaded_models
            ),
        )

    @admin.display(description="last heartbeat", ordering="heartbeat_at")
    def last_heartbeat(self, process: ServiceProcess) -> str:
        return timezone.localtime(process.heartbeat_at).strftime("%Y-%m-%d %H:%M:%S")
