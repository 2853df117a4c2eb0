"""Operations console for executions and breakers.

Records (executions, provider attempts, breaker events) are read-only; breakers show their
state and offer force-open and reset, which call the breaker services.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.utils.html import format_html, format_html_join

from executions import breakers
from executions.exceptions import ExecutionNotCancellable
from executions.models import BreakerEvent, CircuitBreaker, Execution, ExecutionAttempt
from executions.services import execution_cancel


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ExecutionAttemptInline(admin.TabularInline):
    model = ExecutionAttempt
    extra = 0
    can_delete = False
    fields = [
        "run",
        "position",
        "provider",
        "outcome",
        "error_type",
        "error_code",
        "error_message",
        "counted_by_breaker",
        "started_at",
        "duration_s",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request) -> QuerySet:
        return super().get_queryset(request).select_related("provider")


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "status",
        "signature_name",
        "version_number",
        "requested_provider",
        "provider",
        "attempts",
        "queued_at",
        "execution_time_s",
        "error_code",
    ]
    list_filter = ["status", "mode", "requested_provider", "provider", "error_code"]
    list_select_related = ["signature_version__signature", "requested_provider", "provider"]
    search_fields = ["=id", "signature_version__signature__name", "error_message"]
    date_hierarchy = "queued_at"
    inlines = [ExecutionAttemptInline]
    actions = ["cancel_queued"]
    readonly_fields = [field.name for field in Execution._meta.fields]

    @admin.display(description="signature", ordering="signature_version__signature__name")
    def signature_name(self, execution: Execution) -> str:
        return execution.signature_version.signature.name

    @admin.display(description="version", ordering="signature_version__number")
    def version_number(self, execution: Execution) -> int:
        return execution.signature_version.number

    @admin.action(description="Cancel the selected queued executions")
    def cancel_queued(self, request, queryset: QuerySet) -> None:
        cancelled = skipped = 0
        for execution in queryset[:1000]:
            try:
                execution_cancel(execution=execution)
                cancelled += 1
            except ExecutionNotCancellable:
                skipped += 1
        self.message_user(request, f"Cancelled {cancelled}; {skipped} were not queued any more.")

    def get_actions(self, request):
        # Cancelling changes rows, so it needs the change permission the page itself lacks.
        actions = super().get_actions(request)
        if not request.user.has_perm("executions.change_execution"):
            actions.pop("cancel_queued", None)
        return actions


@admin.register(ExecutionAttempt)
class ExecutionAttemptAdmin(ReadOnlyAdmin):
    list_display = [
        "execution",
        "run",
        "position",
        "provider",
        "outcome",
        "error_code",
        "counted_by_breaker",
        "started_at",
        "duration_s",
    ]
    list_filter = ["outcome", "provider", "counted_by_breaker"]
    list_select_related = ["execution", "provider"]
    search_fields = ["=execution__id", "error_message"]
    readonly_fields = [field.name for field in ExecutionAttempt._meta.fields]


CONFIG_FIELDS = [
    "failure_rate_threshold",
    "slow_call_rate_threshold",
    "slow_call_duration_s",
    "sliding_window_size",
    "minimum_calls",
    "open_duration_s",
    "half_open_permitted_calls",
    "half_open_max_wait_s",
]
RECENT_EVENTS = 20
# The columns the breaker services write; everything else on the row is configuration.
STATE_FIELDS = ["provider", *breakers.STATE_FIELDS]


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(admin.ModelAdmin):
    list_display = [
        "provider",
        "state",
        "forced",
        "state_changed_at",
        "window_summary",
        "failure_rate_threshold",
        "minimum_calls",
        "open_duration_s",
    ]
    list_filter = ["state", "forced"]
    list_select_related = ["provider"]
    search_fields = ["provider__name"]
    fieldsets = [
        ("State", {"fields": [*STATE_FIELDS, "recent_events"]}),
        ("Configuration", {"fields": CONFIG_FIELDS}),
    ]
    readonly_fields = [*STATE_FIELDS, "recent_events"]
    actions = ["force_open", "reset"]

    def has_add_permission(self, request, obj=None) -> bool:
        # Created on a provider's first call (or by `executions_breaker <provider> --show`).
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="recent calls")
    def window_summary(self, breaker: CircuitBreaker) -> str:
        calls = len(breaker.window)
        failures = sum(1 for outcome in breaker.window if outcome in ("f", "F"))
        return f"{failures} failed of {calls}"

    @admin.display(description="recent transitions")
    def recent_events(self, breaker: CircuitBreaker) -> str:
        events = breaker.events.order_by("-at", "-id")[:RECENT_EVENTS]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{} &rarr; {}</td><td>{}</td></tr>",
            ((event.at, event.from_state, event.to_state, event.reason) for event in events),
        )
        return format_html("<table>{}</table>", rows) if rows else "none yet"

    def save_model(self, request, obj: CircuitBreaker, form, change: bool) -> None:
        # Workers change the state columns at any moment: write only the configuration.
        CircuitBreaker.objects.filter(pk=obj.pk).update(
            **{name: getattr(obj, name) for name in CONFIG_FIELDS}
        )

    @admin.action(description="Force open (stays open until reset)", permissions=["change"])
    def force_open(self, request, queryset: QuerySet) -> None:
        for breaker in queryset.select_related("provider"):
            breakers.breaker_force_open(
                provider=breaker.provider, reason=f"forced open by {request.user.get_username()}"
            )
        self.message_user(request, f"Forced {queryset.count()} breaker(s) open.", messages.WARNING)

    @admin.action(description="Reset (close, clear the recent calls)", permissions=["change"])
    def reset(self, request, queryset: QuerySet) -> None:
        for breaker in queryset.select_related("provider"):
            breakers.breaker_reset(
                provider=breaker.provider, reason=f"reset by {request.user.get_username()}"
            )
        self.message_user(request, f"Reset {queryset.count()} breaker(s).")


@admin.register(BreakerEvent)
class BreakerEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "breaker", "from_state", "to_state", "reason"]
    list_filter = ["to_state", "breaker__provider"]
    list_select_related = ["breaker__provider"]
    search_fields = ["breaker__provider__name", "reason"]
    date_hierarchy = "at"
    readonly_fields = ["breaker", "from_state", "to_state", "reason", "at"]
