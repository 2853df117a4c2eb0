"""Operations console for executions and breakers.

Records (executions, provider attempts, breaker events) are read-only; breakers show their
state and offer force-open and reset, which call the breaker services.
"""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join

from executions import breakers
from executions.exceptions import ExecutionNotCancellable
from executions.models import BreakerEvent, CircuitBreaker, Execution, ExecutionAttempt
from executions.services import execution_cancel


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


class ReadOnlyMixin:
    """For records: shown, never added, changed or deleted here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ExecutionAttemptInline(ReadOnlyMixin, admin.TabularInline):
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
class ExecutionAdmin(ReadOnlyMixin, admin.ModelAdmin):
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
class ExecutionAttemptAdmin(ReadOnlyMixin, admin.ModelAdmin):
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
    search_fields = ["=execution__id", "error_message"]
    # Newest first: the model's own order (by execution id) is random in time.
    ordering = ["-started_at", "-id"]
    readonly_fields = [field.name for field in ExecutionAttempt._meta.fields]

    @admin.display(description="execution", ordering="execution_id")
    def execution_short_id(self, attempt: ExecutionAttempt) -> str:
        return str(attempt.execution_id)[:8]

    @admin.display(description="duration", ordering="duration_s")
    def duration(self, attempt: ExecutionAttempt) -> str:
        return _seconds(attempt.duration_s)


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


class CircuitBreakerForm(forms.ModelForm):
    class Meta:
        model = CircuitBreaker
        fields = CONFIG_FIELDS

    def clean_half_open_permitted_calls(self) -> int:
        # The database refuses fewer permitted trial calls than are already out.
        permitted = self.cleaned_data["half_open_permitted_calls"]
        issued = self.instance.half_open_permits_issued
        if permitted < issued:
            raise forms.ValidationError(
                f"{issued} trial calls are already admitted: allow at least that many, or reset "
                f"the breaker first.",
                code="below_admitted_trial_calls",
            )
        return permitted


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(admin.ModelAdmin):
    form = CircuitBreakerForm
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
        ("State", {"fields": [*STATE_FIELDS, "window_summary", "recent_events"]}),
        ("Configuration", {"fields": CONFIG_FIELDS}),
    ]
    readonly_fields = [*STATE_FIELDS, "window_summary", "recent_events"]
    actions = ["force_open", "reset"]

    def has_add_permission(self, request, obj=None) -> bool:
        # Created on a provider's first call (or by `executions_breaker <provider> --show`).
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="recent calls")
    def window_summary(self, breaker: CircuitBreaker) -> str:
        failures = breakers.breaker_window_failures(breaker=breaker)
        return f"{failures} failed of {len(breaker.window)}"

    @admin.display(description="recent transitions")
    def recent_events(self, breaker: CircuitBreaker) -> str:
        events = breaker.events.order_by("-at", "-id")[:RECENT_EVENTS]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{} &rarr; {}</td><td>{}</td></tr>",
            (
                (
                    formats.localize(timezone.localtime(event.at)),
                    event.get_from_state_display(),
                    event.get_to_state_display(),
                    event.reason,
                )
                for event in events
            ),
        )
        if not rows:
            return "none yet"
        return format_html(
            "<table><thead><tr><th>at</th><th>transition</th><th>reason</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    def save_model(self, request, obj: CircuitBreaker, form, change: bool) -> None:
        # Workers change the state columns at any moment: write only the configuration, and
        # only while no more trial calls are out than it permits (one may have gone out since
        # the form was checked).
        updated = CircuitBreaker.objects.filter(
            pk=obj.pk, half_open_permits_issued__lte=obj.half_open_permitted_calls
        ).update(**{name: getattr(obj, name) for name in CONFIG_FIELDS})
        if not updated:
            self.message_user(
                request,
                "Not saved: more trial calls went out meanwhile than the new configuration "
                "permits; try again.",
                messages.ERROR,
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
class BreakerEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["at", "provider", "from_state", "to_state", "reason"]
    list_filter = ["to_state", "breaker__provider"]
    list_select_related = ["breaker__provider"]
    search_fields = ["breaker__provider__name", "reason"]
    date_hierarchy = "at"
    readonly_fields = ["breaker", "from_state", "to_state", "reason", "at"]

    @admin.display(description="provider", ordering="breaker__provider__name")
    def provider(self, event: BreakerEvent) -> str:
        # Not the breaker itself: its name carries its current state, not the event's.
        return event.breaker.provider.name
