"""Admin of evaluation runs: read-only records with their progress and results; cancelling,
comparing two runs and starting a new one call the services of
`evaluations.services.evaluate`."""

import json
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from core.admin import ReadOnlyAdminMixin
from core.errors import ApplicationError
from evaluations.metrics import metric_catalogue
from evaluations.models import EvaluationRun, RunStatus
from evaluations.services.evaluate import (
    EvaluationNotFound,
    ResultFilter,
    evaluation_cancel,
    evaluation_comparable,
    evaluation_compare,
    evaluation_create_named,
    evaluation_get,
    evaluation_progress,
    evaluation_results,
)
from providers.models import Provider
from registry.exceptions import errors_flatten
from registry.models import DatasetSplit, Signature

STATUS_COLOURS = {
    RunStatus.QUEUED: "#b7791f",
    RunStatus.RUNNING: "#2b6cb0",
    RunStatus.SUCCEEDED: "#2f855a",
    RunStatus.FAILED: "#c53030",
    RunStatus.CANCELLED: "#718096",
}
RESULTS_PER_PAGE = 50
# The runs offered to compare with, and the differences a comparison page lists.
COMPARABLE_MAX = 50
DIFFERENCES_MAX = 200
CANCEL_MAX = 1000


def score_text(score: float | None, low: float | None, high: float | None) -> str:
    if score is None:
        return "-"
    if low is None or high is None:
        return f"{score:.3f}"
    return f"{score:.3f} [{low:.3f}, {high:.3f}]"


class EvaluationForm(forms.Form):
    """What `evaluation_create_named` needs, picked by name."""

    signature = forms.ModelChoiceField(
        queryset=Signature.objects.order_by("name"), to_field_name="name"
    )
    version = forms.CharField(
        required=False,
        max_length=100,
        help_text="A version number or an alias; empty: production, else the latest.",
    )
    dataset = forms.CharField(max_length=100, help_text="The name of one of its datasets.")
    split = forms.ChoiceField(choices=DatasetSplit.choices, initial=DatasetSplit.DEV)
    provider = forms.ModelChoiceField(
        queryset=Provider.objects.filter(enabled=True).order_by("name"), to_field_name="name"
    )
    metric = forms.CharField(
        max_length=200,
        initial="exact_match",
        help_text="A built-in metric (listed below) or a dotted path to a function.",
    )
    metric_params = forms.JSONField(
        required=False,
        initial=dict,
        help_text='A JSON object, e.g. {"threshold": 0.5}.',
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )

    def clean_version(self) -> int | str | None:
        value = self.cleaned_data["version"].strip()
        if not value:
            return None
        return int(value) if value.isascii() and value.isdigit() else value

    def clean_metric_params(self) -> dict:
        value = self.cleaned_data["metric_params"]
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Enter a JSON object.")
        return value


@admin.register(EvaluationRun)
class EvaluationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "status_badge",
        "signature_version",
        "dataset_name",
        "split",
        "provider",
        "metric",
        "score_display",
        "progress_display",
        "created_at",
    ]
    list_filter = [
        "status",
        "split",
        ("signature_version__signature", admin.RelatedOnlyFieldListFilter),
        ("provider", admin.RelatedOnlyFieldListFilter),
        "metric",
    ]
    list_select_related = ["signature_version__signature", "dataset", "provider"]
    search_fields = ["=id", "signature_version__signature__name", "dataset__name", "metric"]
    date_hierarchy = "created_at"
    actions = ["cancel_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "status",
                    "signature_version",
                    "dataset",
                    "dataset_hash",
                    "split",
                    "provider",
                    "metric",
                    "metric_params_display",
                    "optimization_run",
                ]
            },
        ),
        (
            "Result",
            {
                "fields": [
                    "score_display",
                    "progress_display",
                    "input_tokens",
                    "output_tokens",
                    "error_code",
                    "error_message",
                ]
            },
        ),
        (
            "Worker",
            {
                "fields": [
                    "created_by",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "attempts",
                    "cancel_requested",
                    "task_id",
                    "heartbeat_at",
                ]
            },
        ),
    ]
    readonly_fields = [field.name for field in EvaluationRun._meta.fields] + [
        "score_display",
        "progress_display",
        "metric_params_display",
    ]

    # Columns ----------------------------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: EvaluationRun) -> str:
        return format_html(
            '<span style="color:#fff;background:{};padding:1px 6px;border-radius:3px">{}</span>',
            STATUS_COLOURS.get(run.status, "#4a5568"),
            run.get_status_display(),
        )

    @admin.display(description="dataset", ordering="dataset__name")
    def dataset_name(self, run: EvaluationRun) -> str:
        return f"{run.dataset.name} ({run.dataset_hash[:8]})"

    @admin.display(description="score (95% CI)", ordering="score")
    def score_display(self, run: EvaluationRun) -> str:
        return score_text(run.score, run.ci_low, run.ci_high)

    @admin.display(description="progress")
    def progress_display(self, run: EvaluationRun) -> str:
        progress = evaluation_progress(run)
        errors = f", {progress['errors']} errors" if progress["errors"] else ""
        eta = f", ~{progress['eta_s']:.0f} s left" if progress["eta_s"] is not None else ""
        return f"{progress['done']}/{progress['total']}{errors}{eta}"

    @admin.display(description="metric params")
    def metric_params_display(self, run: EvaluationRun) -> str:
        return json.dumps(run.metric_params, sort_keys=True) if run.metric_params else "-"

    # Actions ----------------------------------------------------------------------------------

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        # Cancelling changes rows, which the read-only pages themselves never do.
        return request.user.has_perm("evaluations.change_evaluationrun")

    def has_create_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("evaluations.add_evaluationrun")

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        asked = 0
        for run in queryset.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])[:CANCEL_MAX]:
            evaluation_cancel(run=run)
            asked += 1
        self.message_user(
            request,
            f"Cancelled {asked} run(s): queued ones at once, running ones at their next example.",
        )

    # Pages ------------------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "new/",
                view(partial(evaluation_new_view, model_admin=self)),
                name="evaluations_evaluationrun_new",
            ),
            path(
                "<int:pk>/cancel/",
                view(partial(evaluation_cancel_view, model_admin=self)),
                name="evaluations_evaluationrun_cancel",
            ),
            path(
                "<int:pk>/compare/",
                view(partial(evaluation_compare_view, model_admin=self)),
                name="evaluations_evaluationrun_compare",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        context = {"can_create": self.has_create_permission(request)} | (extra_context or {})
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        context = dict(extra_context or {})
        try:
            run = evaluation_get(run_id=object_id)
        except EvaluationNotFound:
            pass  # the stock view says so
        else:
            context |= _detail_context(request, run, can_cancel=self.has_cancel_permission(request))
        return super().change_view(request, object_id, form_url, extra_context=context)


def _detail_context(request: HttpRequest, run: EvaluationRun, *, can_cancel: bool) -> dict:
    """The run page's progress, a page of its results, and the runs it can be compared with."""
    show = request.GET.get("show") or ResultFilter.ALL
    if show not in ResultFilter.CHOICES:
        show = ResultFilter.ALL
    page = Paginator(evaluation_results(run=run, show=show), RESULTS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return {
        "run": run,
        "progress": evaluation_progress(run),
        # While it runs, the page follows it.
        "refresh_s": 5 if not run.finished else None,
        "results_page": page,
        "show": show,
        "show_choices": ResultFilter.CHOICES,
        "comparable": list(evaluation_comparable(run=run)[:COMPARABLE_MAX]),
        "can_cancel": can_cancel and not run.finished,
    }


def evaluation_cancel_view(request: HttpRequest, pk: int, *, model_admin) -> HttpResponse:
    if request.method != "POST" or not model_admin.has_cancel_permission(request):
        raise PermissionDenied
    run = evaluation_cancel(run=evaluation_get(run_id=pk))
    if run.status == RunStatus.CANCELLED:
        messages.success(request, f"Cancelled {run}.")
    elif run.cancel_requested and not run.finished:
        messages.info(request, f"Asked {run} to stop: it stops at its next example.")
    else:
        messages.warning(request, f"{run} had already ended ({run.get_status_display()}).")
    return HttpResponseRedirect(reverse("admin:evaluations_evaluationrun_change", args=[pk]))


def evaluation_compare_view(request: HttpRequest, pk: int, *, model_admin) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    a = evaluation_get(run_id=pk)
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"Compare evaluation {a.pk}",
        "a": a,
        "comparable": list(evaluation_comparable(run=a)[:COMPARABLE_MAX]),
    }
    other = request.GET.get("b")
    if other:
        try:
            comparison = evaluation_compare(
                a=a, b=evaluation_get(run_id=other), limit=DIFFERENCES_MAX
            )
        except ApplicationError as error:
            messages.error(request, error.message)
        else:
            context |= {
                "comparison": comparison,
                "a_score": score_text(a.score, a.ci_low, a.ci_high),
                "b_score": score_text(
                    comparison.b.score, comparison.b.ci_low, comparison.b.ci_high
                ),
                "differences_max": DIFFERENCES_MAX,
            }
    return TemplateResponse(request, "admin/evaluations/evaluationrun/compare.html", context)


def _messages(problems: Any) -> list[str]:
    """A field's problems as the API holds them (`[{"code", "message"}]`, or nested)."""
    if isinstance(problems, list) and all(isinstance(p, dict) and "message" in p for p in problems):
        return [str(problem["message"]) for problem in problems]
    return errors_flatten(problems)


def _form_errors(form: forms.Form, error: ApplicationError) -> None:
    """Put a service's error on the form: by field where it names fields of the form."""
    placed = False
    for name, problems in (error.errors or {}).items():
        if name in form.fields:
            form.add_error(name, "; ".join(_messages(problems)) or error.message)
            placed = True
    if not placed:
        form.add_error(None, error.message)


def evaluation_new_view(request: HttpRequest, *, model_admin) -> HttpResponse:
    """Start an evaluation run: the form names everything, the service checks it."""
    if not model_admin.has_create_permission(request):
        raise PermissionDenied
    form = EvaluationForm(request.POST or None, initial=_new_initial(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            run = evaluation_create_named(
                signature=data["signature"].name,
                version=data["version"],
                dataset=data["dataset"],
                split=data["split"],
                provider=data["provider"].name,
                metric=data["metric"],
                metric_params=data["metric_params"],
                user=request.user,
            )
        except ApplicationError as error:
            _form_errors(form, error)
        else:
            messages.success(request, f"Queued {run}.")
            return HttpResponseRedirect(
                reverse("admin:evaluations_evaluationrun_change", args=[run.pk])
            )
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "New evaluation",
        "form": form,
        "metrics": metric_catalogue(),
    }
    return TemplateResponse(request, "admin/evaluations/evaluationrun/new.html", context)


def _new_initial(request: HttpRequest) -> dict[str, Any]:
    # Links from a version or a dataset page may fill the form in (?signature=qa&dataset=...).
    return {
        name: request.GET[name]
        for name in ("signature", "version", "dataset", "split", "provider", "metric")
        if name in request.GET
    }
