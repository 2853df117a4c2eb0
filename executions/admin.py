"""Operations console for executions: read-only records and the failure log; cancelling
queued executions and re-running any (as new executions) call the services."""

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from core.admin import ReadOnlyAdminMixin
from core.errors import ApplicationError
from core.secrets import REDACTED
from executions.exceptions import ExecutionNotCancellable
from executions.models import Execution, ExecutionAttempt, ExecutionFailure
from executions.services.cancel import execution_cancel
from executions.services.rerun import execution_rerun
from providers.models import Provider
from registry.models import SignatureVersion

# Status colours: green done, red failed, amber waiting or gave up on time, grey cancelled.
STATUS_COLOURS = {
    Execution.Status.QUEUED: "#b7791f",
    Execution.Status.RUNNING: "#2b6cb0",
    Execution.Status.SUCCEEDED: "#2f855a",
    Execution.Status.FAILED: "#c53030",
    Execution.Status.TIMED_OUT: "#c05621",
    Execution.Status.CANCELLED: "#718096",
    ExecutionAttempt.Outcome.REJECTED: "#805ad5",
}
# An admin action re-runs at most this many executions at once.
RERUN_MAX = 100
MESSAGE_CHARS = 80
# The executions list counts at most this many matching executions (100 pages of 100): past
# it, its pages stop and a note says so.
CHANGELIST_COUNT_MAX = 10_000
# The error-code filter offers the codes of this many of the latest executions with one.
ERROR_CODE_CHOICES_FROM = 200


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _badge(value: str, label: str) -> str:
    return format_html(
        '<span style="color:#fff;background:{};padding:1px 6px;border-radius:3px;'
        'white-space:nowrap">{}</span>',
        STATUS_COLOURS.get(value, "#4a5568"),
        label,
    )


def _pre(text: str) -> str:
    if not text:
        return "-"
    return format_html(
        '<pre style="white-space:pre-wrap;max-height:30em;overflow:auto;margin:0">{}</pre>', text
    )


class BoundedCountPaginator(Paginator):
    """Counts the matching rows up to `CHANGELIST_COUNT_MAX`, not all of them: an exact
    `COUNT(*)` of a filtered list of executions reads every row it counts, on every page,
    and grows with the table. Past the bound the pages stop there (`more_than_counted`)."""

    @cached_property
    def counted(self) -> int:
        return self.object_list.order_by()[: CHANGELIST_COUNT_MAX + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self.counted, CHANGELIST_COUNT_MAX)

    @property
    def more_than_counted(self) -> bool:
        return self.counted > CHANGELIST_COUNT_MAX


class SignatureListFilter(admin.RelatedFieldListFilter):
    """By signature, listing the signatures' own table (the "related only" filter read every
    execution to find which signatures they use), and filtering by the signature's version
    ids: no join, so that the list's `execution_list_signature` index serves it."""

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        signature_ids = self.used_parameters.get(self.lookup_kwarg)
        if not signature_ids:
            return super().queryset(request, queryset)
        try:
            versions = list(
                SignatureVersion.objects.filter(signature_id__in=signature_ids).values_list(
                    "id", flat=True
                )
            )
        except (ValueError, ValidationError) as error:
            raise IncorrectLookupParameters(error) from error
        return queryset.filter(signature_version__in=versions)


class ErrorCodeListFilter(admin.SimpleListFilter):
    """By error code, offering the codes of the latest executions that failed (read newest
    first, a bounded number of rows) rather than every code in the table (a scan of all the
    executions on every page), plus the one selected."""

    title = "error code"
    parameter_name = "error_code"

    def lookups(self, request, model_admin):
        latest = (
            Execution.objects.exclude(error_code="")
            .order_by("-queued_at", "-id")
            .values_list("error_code", flat=True)[:ERROR_CODE_CHOICES_FROM]
        )
        codes = set(latest)
        if self.value():
            codes.add(self.value())
        return [(code, code) for code in sorted(codes)]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        return queryset.filter(error_code=self.value()) if self.value() else queryset


class RerunForm(forms.Form):
    """Where to re-run: empty fields keep the original's provider and version."""

    provider = forms.ModelChoiceField(
        queryset=Provider.objects.filter(enabled=True).order_by("name"),
        required=False,
        to_field_name="name",
        empty_label="(the provider each execution requested)",
    )
    version = forms.CharField(
        required=False,
        max_length=100,
        help_text="A version number or an alias (production, latest...); empty: the version "
        "each execution ran.",
    )

    def clean_version(self) -> int | str | None:
        value = self.cleaned_data["version"].strip()
        if not value:
            return None
        return int(value) if value.isdigit() else value


class RerunActionsMixin:
    """Two admin actions on a list whose rows lead to executions (`rerun_targets`): re-run them
    with the same settings, or on a provider or version chosen on an intermediate page."""

    def rerun_targets(self, queryset: QuerySet) -> list[Execution]:
        raise NotImplementedError

    def has_rerun_permission(self, request) -> bool:
        # A re-run creates an execution, which the read-only pages themselves never do.
        return request.user.has_perm("executions.add_execution")

    @admin.action(description="Re-run the selected executions", permissions=["rerun"])
    def rerun_same(self, request, queryset: QuerySet) -> None:
        self._rerun(request, self.rerun_targets(queryset))

    @admin.action(
        description="Re-run the selected executions on another provider or version…",
        permissions=["rerun"],
    )
    def rerun_choose(self, request, queryset: QuerySet):
        targets = self.rerun_targets(queryset)
        form = RerunForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            provider = form.cleaned_data["provider"]
            self._rerun(
                request,
                targets,
                provider=provider.name if provider else None,
                version=form.cleaned_data["version"],
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Re-run executions",
            "form": form,
            "targets": targets,
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "action": "rerun_choose",
        }
        return TemplateResponse(request, "admin/executions/rerun.html", context)

    def _rerun(self, request, targets: list[Execution], **where) -> None:
        created, refused = [], []
        for execution in targets:
            try:
                result = execution_rerun(execution=execution, user=request.user, **where)
            except ApplicationError as error:
                refused.append(f"{str(execution.pk)[:8]}: {error.message}")
            else:
                created.append(str(result.execution.pk)[:8])
        if created:
            self.message_user(request, f"Queued {len(created)} re-run(s): {', '.join(created)}.")
        if refused:
            self.message_user(request, "Not re-run: " + "; ".join(refused), level=messages.ERROR)


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
        "cause",
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
class ExecutionAdmin(RerunActionsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "short_id",
        "status_badge",
        "signature_name",
        "version_number",
        "requested_provider",
        "provider",
        "attempts",
        "queued_at",
        "execution_time",
        "error_cause",
        "error_code",
    ]
    # Each filter's choices come from a small table, or a bounded read: none reads every
    # execution to find which values occur.
    list_filter = [
        "status",
        "error_cause",
        ("signature_version__signature", SignatureListFilter),
        "signature_version__number",
        ("requested_provider", admin.RelatedFieldListFilter),
        ("provider", admin.RelatedFieldListFilter),
        ("api_key", admin.RelatedFieldListFilter),
        "mode",
        ErrorCodeListFilter,
        # Fixed ranges rather than a date hierarchy, whose links list the months or days
        # that have executions: a DISTINCT over every matching row on every page.
        ("queued_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["signature_version__signature", "requested_provider", "provider"]
    # The list's order, read from the `queued_at` index (or the list indexes after a filter
    # on status, signature or API key): a page reads its rows and stops.
    ordering = ["-queued_at", "-id"]
    # No count of the whole table next to the filtered one, and the filtered one bounded.
    show_full_result_count = False
    paginator = BoundedCountPaginator
    search_fields = ["=id", "signature_version__signature__name", "error_message"]
    inlines = [ExecutionAttemptInline]
    actions = ["cancel_queued", "rerun_same", "rerun_choose"]
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
        (
            "Result",
            {
                "fields": [
                    "outputs",
                    "error_cause",
                    "error_type",
                    "error_code",
                    "error_message",
                    "rerun_of",
                ]
            },
        ),
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
                    "keep_trace",
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

    def get_queryset(self, request) -> QuerySet:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name == "executions_execution_changelist":
            # The list shows none of the JSON documents nor the versions' programs (their
            # compiled demos can be long): a page of 100 rows reads only what it shows.
            queryset = queryset.defer(
                "inputs",
                "config",
                "outputs",
                "error_message",
                "signature_version__instructions",
                "signature_version__input_fields",
                "signature_version__output_fields",
                "signature_version__lm_defaults",
                "signature_version__compiled_state",
                "signature_version__changelog",
            )
        return queryset

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None and changelist.paginator.more_than_counted:
            self.message_user(
                request,
                f"More than {CHANGELIST_COUNT_MAX:,} executions match: the pages stop at the "
                "newest of them. Narrow the list with the filters or the dates.",
                level=messages.INFO,
            )
        return response

    @admin.display(description="id", ordering="id")
    def short_id(self, execution: Execution) -> str:
        # The full id is on the page and searchable (`=<id>`); eight characters tell rows apart.
        return str(execution.pk)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, execution: Execution) -> str:
        return _badge(execution.status, execution.get_status_display())

    def rerun_targets(self, queryset: QuerySet) -> list[Execution]:
        # Whole rows (the list defers the inputs a re-run copies).
        return list(
            queryset.defer(None).select_related(
                "signature_version__signature", "requested_provider"
            )[:RERUN_MAX]
        )

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


class FailureCauseFilter(admin.SimpleListFilter):
    """By cause, with the causes' labels (the column's choices)."""

    title = "cause"
    parameter_name = "cause"

    def lookups(self, request, model_admin):
        return ExecutionFailure._meta.get_field("cause").choices

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        return queryset.filter(cause=self.value()) if self.value() else queryset


@admin.register(ExecutionFailure)
class ExecutionFailureAdmin(RerunActionsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The failure log: every failed or refused provider call, newest first, with the evidence
    to find out why (prompt, raw output, traceback, breaker state, inputs)."""

    list_display = [
        "time",
        "outcome_badge",
        "signature_name",
        "version_number",
        "provider",
        "cause",
        "error_code",
        "short_message",
    ]
    list_display_links = ["time"]
    list_filter = [
        FailureCauseFilter,
        "error_type",
        ("provider", admin.RelatedOnlyFieldListFilter),
        ("execution__signature_version__signature", admin.RelatedOnlyFieldListFilter),
        "execution__signature_version__number",
        ("execution__api_key", admin.RelatedOnlyFieldListFilter),
        "started_at",
    ]
    list_select_related = ["execution__signature_version__signature", "provider"]
    search_fields = [
        "=execution__id",
        "execution__signature_version__signature__name",
        "provider__name",
        "error_code",
        "error_message",
        "error_detail",
    ]
    date_hierarchy = "started_at"
    ordering = ["-started_at", "-id"]
    actions = ["rerun_same", "rerun_choose"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "time",
                    "outcome_badge",
                    "execution_link",
                    "signature_name",
                    "version_number",
                    "provider",
                    "run",
                    "position",
                    "breaker_state",
                    "counted_by_breaker",
                ]
            },
        ),
        (
            "Error",
            {
                "fields": [
                    "cause",
                    "error_type",
                    "error_code",
                    "error_message",
                    "error_detail",
                    "traceback_text",
                ]
            },
        ),
        ("Call", {"fields": ["inputs", "prompt_text", "raw_output_text"]}),
        ("Metrics", {"fields": ["duration", "input_tokens", "output_tokens"]}),
    ]
    readonly_fields = [
        "time",
        "outcome_badge",
        "execution_link",
        "signature_name",
        "version_number",
        "provider",
        "run",
        "position",
        "breaker_state",
        "counted_by_breaker",
        "cause",
        "error_type",
        "error_code",
        "error_message",
        "error_detail",
        "traceback_text",
        "inputs",
        "prompt_text",
        "raw_output_text",
        "duration",
        "input_tokens",
        "output_tokens",
    ]

    def get_queryset(self, request) -> QuerySet:
        queryset = (
            super()
            .get_queryset(request)
            .select_related("execution__signature_version__signature", "provider")
        )
        match = request.resolver_match
        if match is not None and match.url_name == "executions_executionfailure_changelist":
            # The list shows none of the long texts (each up to 20,000 characters a row).
            queryset = queryset.defer(
                "prompt", "raw_output", "traceback", "error_detail", "execution__inputs"
            )
        return queryset

    @admin.display(description="time", ordering="started_at")
    def time(self, failure: ExecutionFailure) -> str:
        # On one line, so the list stays readable at a laptop's width.
        return format_html(
            '<span class="nowrap">{}</span>',
            timezone.localtime(failure.started_at).strftime("%Y-%m-%d %H:%M:%S"),
        )

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, failure: ExecutionFailure) -> str:
        return _badge(failure.outcome, failure.get_outcome_display())

    @admin.display(
        description="signature", ordering="execution__signature_version__signature__name"
    )
    def signature_name(self, failure: ExecutionFailure) -> str:
        return failure.execution.signature_version.signature.name

    @admin.display(description="version", ordering="execution__signature_version__number")
    def version_number(self, failure: ExecutionFailure) -> int:
        return failure.execution.signature_version.number

    @admin.display(description="message")
    def short_message(self, failure: ExecutionFailure) -> str:
        text = failure.error_message
        return text if len(text) <= MESSAGE_CHARS else f"{text[: MESSAGE_CHARS - 1]}…"

    @admin.display(description="execution")
    def execution_link(self, failure: ExecutionFailure) -> str:
        url = reverse("admin:executions_execution_change", args=[failure.execution_id])
        return format_html(
            '<a href="{}">{}</a> ({})', url, failure.execution_id, failure.execution.status
        )

    @admin.display(description="inputs")
    def inputs(self, failure: ExecutionFailure) -> str:
        if not settings.EXECUTIONS_FAILURE_LOG_INPUTS:
            return REDACTED
        return _pre(json.dumps(failure.execution.inputs, indent=2, ensure_ascii=False))

    @admin.display(description="prompt")
    def prompt_text(self, failure: ExecutionFailure) -> str:
        if not settings.EXECUTIONS_FAILURE_LOG_INPUTS:
            return REDACTED
        return _pre(failure.prompt)

    @admin.display(description="raw output")
    def raw_output_text(self, failure: ExecutionFailure) -> str:
        return _pre(failure.raw_output)

    @admin.display(description="traceback")
    def traceback_text(self, failure: ExecutionFailure) -> str:
        return _pre(failure.traceback)

    @admin.display(description="duration", ordering="duration_s")
    def duration(self, failure: ExecutionFailure) -> str:
        return _seconds(failure.duration_s)

    def rerun_targets(self, queryset: QuerySet) -> list[Execution]:
        ids = queryset.order_by().values_list("execution_id", flat=True).distinct()[:RERUN_MAX]
        return list(
            Execution.objects.filter(id__in=list(ids)).select_related(
                "signature_version__signature", "requested_provider"
            )
        )
