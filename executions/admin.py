"""Operations console for executions: read-only records, and cancelling queued ones."""

from django.contrib import admin
from django.db.models import QuerySet

from core.admin import ReadOnlyAdminMixin
from executions.exceptions import ExecutionNotCancellable
from executions.models import Execution, ExecutionAttempt
from executions.services.cancel import execution_cancel


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


class ExecutionAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ExecutionAttempt
    extra = 0
    fields = [
        "run",
        "position",
        "provider",
        "outcome",
        "error_type",
        "error_code",
        "error_message",
        "error_detail",
        "counted_by_breaker",
        "started_at",
        "duration",
    ]
    readonly_fields = fields

    def get_queryset(self, request) -> QuerySet:
        return super().get_queryset(request).select_related("provider")

    @admin.display(description="duration", ordering="duration_s")
    def duration(self, attempt: ExecutionAttempt) -> str:
        return _seconds(attempt.duration_s)


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "short_id",
        "status",
        "signature_name",
        "version_number",
        "requested_provider",
        "provider",
        "attempts",
        "queued_at",
        "execution_time",
        "error_code",
    ]
    list_filter = ["status", "mode", "requested_provider", "provider", "error_code"]
    list_select_related = ["signature_version__signature", "requested_provider", "provider"]
    search_fields = ["=id", "signature_version__signature__name", "error_message"]
    date_hierarchy = "queued_at"
    inlines = [ExecutionAttemptInline]
    actions = ["cancel_queued"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "status",
                    "mode",
                    "signature_version",
                    "requested_provider",
                    "provider",
                ]
            },
        ),
        ("Result", {"fields": ["outputs", "error_type", "error_code", "error_message"]}),
        (
            "Request",
            {
                "fields": [
                    "inputs",
                    "config",
                    "timeout_s",
                    "batch_id",
                    "api_key",
                    "created_by",
                    "idempotency_key",
                    "request_hash",
                ]
            },
        ),
        (
            "Timings and metrics",
            {
                "fields": [
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "execution_time",
                    "input_tokens",
                    "output_tokens",
                    "memory_mb",
                    "success",
                ]
            },
        ),
        ("Worker", {"fields": ["attempts", "task_id", "heartbeat_at"]}),
    ]
    readonly_fields = [field.name for field in Execution._meta.fields] + [
        "execution_time",
        "success",
    ]

    @admin.display(description="id", ordering="id")
    def short_id(self, execution: Execution) -> str:
        # The full id is on the page and searchable (`=<id>`); eight characters tell rows apart.
        return str(execution.pk)[:8]

    @admin.display(description="execution time", ordering="execution_time_s")
    def execution_time(self, execution: Execution) -> str:
        return _seconds(execution.execution_time_s)

    @admin.display(description="success", boolean=True)
    def success(self, execution: Execution) -> bool | None:
        return execution.success

    @admin.display(description="signature", ordering="signature_version__signature__name")
    def signature_name(self, execution: Execution) -> str:
        return execution.signature_version.signature.name

    @admin.display(description="version", ordering="signature_version__number")
    def version_number(self, execution: Execution) -> int:
        return execution.signature_version.number

    @admin.action(description="Cancel the selected queued executions", permissions=["cancel"])
    def cancel_queued(self, request, queryset: QuerySet) -> None:
        cancelled = skipped = 0
        for execution in queryset[:1000]:
            try:
                execution_cancel(execution=execution)
                cancelled += 1
            except ExecutionNotCancellable:
                skipped += 1
        self.message_user(request, f"Cancelled {cancelled}; {skipped} were not queued any more.")

    def has_cancel_permission(self, request) -> bool:
        # Cancelling changes rows, so it needs the change permission the page itself lacks.
        return request.user.has_perm("executions.change_execution")


@admin.register(ExecutionAttempt)
class ExecutionAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "execution_short_id",
        "run",
        "position",
        "provider",
        "outcome",
        "error_code",
        "counted_by_breaker",
        "started_at",
        "duration",
    ]
    list_filter = ["outcome", "provider", "counted_by_breaker"]
    list_select_related = ["provider"]
    search_fields = ["=execution__id", "error_message", "error_detail"]
    # Newest first: the model's own order (by execution id) is random in time.
    ordering = ["-started_at", "-id"]
    readonly_fields = [field.name for field in ExecutionAttempt._meta.fields]

    @admin.display(description="execution", ordering="execution_id")
    def execution_short_id(self, attempt: ExecutionAttempt) -> str:
        return str(attempt.execution_id)[:8]

    @admin.display(description="duration", ordering="duration_s")
    def duration(self, attempt: ExecutionAttempt) -> str:
        return _seconds(attempt.duration_s)
