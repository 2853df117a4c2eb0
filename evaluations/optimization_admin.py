"""Admin of optimization runs: read-only records with their stage, progress, trajectory (a
small server-drawn SVG chart) and scores; cancelling, promoting the result and starting a new
run call the services of `evaluations.services.optimize`."""

import json
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from core.admin import ReadOnlyAdminMixin
from core.errors import ApplicationError
from evaluations.evaluation_admin import STATUS_COLOURS
from evaluations.models import OptimizationRun, Optimizer, RunStatus
from evaluations.services.optimize import (
    OptimizationNotFound,
    optimization_cancel,
    optimization_create_named,
    optimization_get,
    optimization_promote,
    optimizer_catalogue,
    problem_lines,
)
from providers.models import Provider
from registry.models import DatasetSplit, Signature
from registry.services.promotion import promotion_may_force

CANCEL_MAX = 1000
PROMOTE_PERMISSIONS = ("registry.add_promotion", "registry.add_alias", "registry.change_alias")

# The trajectory chart: a score (0 to 1) per point, left to right, in a fixed box.
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 520, 170, 30


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def trajectory_svg(trajectory: list[dict[str, Any]]) -> SafeString:
    """The scores as a line chart: filled dots for whole-dev-split scores, hollow ones for
    minibatches; each dot's title names it. Colours and sizes are SVG attributes (no script,
    no inline style)."""
    if not trajectory:
        return mark_safe("")
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / max(1, len(trajectory) - 1)

    def x(index: int) -> float:
        return CHART_PAD + index * step

    def y(score: float) -> float:
        return CHART_PAD + (1 - max(0.0, min(1.0, score))) * inner_h

    points = [(x(i), y(float(p["score"])), p) for i, p in enumerate(trajectory)]
    line = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
    dots = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="4" fill="{}" stroke="#2b6cb0" stroke-width="2">'
        "<title>{}: {} ({} examples)</title></circle>",
        (
            (
                f"{px:.1f}",
                f"{py:.1f}",
                "#2b6cb0" if p.get("full", True) else "#ffffff",
                p["label"],
                _score(p["score"]),
                p.get("examples", "?"),
            )
            for px, py, p in points
        ),
    )
    grid = format_html_join(
        "",
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#cbd5e0" stroke-width="1"/>'
        '<text x="{}" y="{}" font-size="11" fill="#4a5568" text-anchor="end">{}</text>',
        (
            (
                CHART_PAD,
                y(level),
                CHART_WIDTH - CHART_PAD,
                y(level),
                CHART_PAD - 4,
                y(level) + 4,
                label,
            )
            for level, label in ((0.0, "0"), (0.5, "0.5"), (1.0, "1"))
        ),
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" '
        'role="img" aria-label="Dev score of each candidate">{}'
        '<polyline points="{}" fill="none" stroke="#2b6cb0" stroke-width="2"/>{}'
        '<text x="{}" y="{}" font-size="11" fill="#4a5568">{}</text>'
        '<text x="{}" y="{}" font-size="11" fill="#4a5568" text-anchor="end">{}</text></svg>',
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_WIDTH,
        CHART_HEIGHT,
        grid,
        line,
        dots,
        CHART_PAD,
        CHART_HEIGHT - 8,
        trajectory[0]["label"],
        CHART_WIDTH - CHART_PAD,
        CHART_HEIGHT - 8,
        trajectory[-1]["label"],
    )


class OptimizationForm(forms.Form):
    """What `optimization_create_named` needs, picked by name."""

    signature = forms.ModelChoiceField(
        queryset=Signature.objects.order_by("name"), to_field_name="name"
    )
    version = forms.CharField(
        required=False,
        max_length=100,
        help_text="The source version: a number or an alias; empty: production, else the latest.",
    )
    dataset = forms.CharField(max_length=100, help_text="The name of one of its datasets.")
    train_split = forms.ChoiceField(choices=DatasetSplit.choices, initial=DatasetSplit.TRAIN)
    dev_split = forms.ChoiceField(choices=DatasetSplit.choices, initial=DatasetSplit.DEV)
    metric = forms.CharField(max_length=200, initial="exact_match")
    student = forms.ModelChoiceField(
        queryset=Provider.objects.filter(enabled=True)
        .exclude(kind=Provider.Kind.POOL)
        .order_by("name"),
        to_field_name="name",
    )
    teacher = forms.ModelChoiceField(
        queryset=Provider.objects.filter(enabled=True)
        .exclude(kind=Provider.Kind.POOL)
        .order_by("name"),
        to_field_name="name",
        required=False,
        help_text="Optional; MIPROv2 needs one (its prompt model).",
    )
    optimizer = forms.ChoiceField(choices=Optimizer.choices, initial=Optimizer.BOOTSTRAP_FEW_SHOT)
    params = forms.JSONField(
        required=False,
        initial=dict,
        help_text='A JSON object, e.g. {"max_bootstrapped_demos": 4}; the defaults are below.',
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )
    seed = forms.IntegerField(initial=0, min_value=0)

    def clean_version(self) -> int | str | None:
        value = self.cleaned_data["version"].strip()
        if not value:
            return None
        return int(value) if value.isascii() and value.isdigit() else value

    def clean_params(self) -> dict:
        value = self.cleaned_data["params"]
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Enter a JSON object.")
        return value


@admin.register(OptimizationRun)
class OptimizationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "status_badge",
        "signature_version",
        "optimizer",
        "dataset_name",
        "student_provider",
        "stage",
        "trials_display",
        "baseline_display",
        "best_display",
        "result_version",
        "created_at",
    ]
    list_filter = [
        "status",
        "optimizer",
        ("signature_version__signature", admin.RelatedOnlyFieldListFilter),
        ("student_provider", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = [
        "signature_version__signature",
        "dataset",
        "student_provider",
        "result_version__signature",
    ]
    search_fields = ["=id", "signature_version__signature__name", "dataset__name"]
    date_hierarchy = "created_at"
    actions = ["cancel_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "status",
                    "stage",
                    "signature_version",
                    "dataset",
                    "dataset_hash",
                    "train_split",
                    "dev_split",
                    "metric",
                    "student_provider",
                    "teacher_provider",
                    "optimizer",
                    "params_display",
                    "seed",
                ]
            },
        ),
        (
            "Result",
            {
                "fields": [
                    "trials_display",
                    "baseline_display",
                    "best_display",
                    "result_version",
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
    readonly_fields = [field.name for field in OptimizationRun._meta.fields] + [
        "params_display",
        "trials_display",
        "baseline_display",
        "best_display",
    ]

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: OptimizationRun) -> str:
        return format_html(
            '<span style="color:#fff;background:{};padding:1px 6px;border-radius:3px">{}</span>',
            STATUS_COLOURS.get(run.status, "#4a5568"),
            run.get_status_display(),
        )

    @admin.display(description="dataset", ordering="dataset__name")
    def dataset_name(self, run: OptimizationRun) -> str:
        return f"{run.dataset.name} ({run.dataset_hash[:8]})"

    @admin.display(description="trials")
    def trials_display(self, run: OptimizationRun) -> str:
        return f"{run.trials_done}/{run.trials_total or '?'}"

    @admin.display(description="baseline (dev)", ordering="baseline_score")
    def baseline_display(self, run: OptimizationRun) -> str:
        return _score(run.baseline_score)

    @admin.display(description="best (dev)", ordering="best_score")
    def best_display(self, run: OptimizationRun) -> str:
        return _score(run.best_score)

    @admin.display(description="params")
    def params_display(self, run: OptimizationRun) -> str:
        return json.dumps(run.params, sort_keys=True)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("evaluations.change_optimizationrun")

    def has_create_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("evaluations.add_optimizationrun")

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perms(PROMOTE_PERMISSIONS)

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        asked = 0
        for run in queryset.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])[:CANCEL_MAX]:
            optimization_cancel(run=run)
            asked += 1
        self.message_user(
            request, f"Cancelled {asked} run(s): queued ones at once, running ones soon after."
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "new/",
                view(partial(optimization_new_view, model_admin=self)),
                name="evaluations_optimizationrun_new",
            ),
            path(
                "<int:pk>/cancel/",
                view(partial(optimization_cancel_view, model_admin=self)),
                name="evaluations_optimizationrun_cancel",
            ),
            path(
                "<int:pk>/promote/",
                view(partial(optimization_promote_view, model_admin=self)),
                name="evaluations_optimizationrun_promote",
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
            run = optimization_get(run_id=int(object_id))
        except (OptimizationNotFound, ValueError):
            pass  # the stock view says so
        else:
            context |= {
                "run": run,
                "chart": trajectory_svg(run.trajectory),
                "refresh_s": None if run.finished else 5,
                "can_cancel": self.has_cancel_permission(request) and not run.finished,
                "can_promote": (
                    self.has_promote_permission(request)
                    and run.status == RunStatus.SUCCEEDED
                    and run.result_version is not None
                ),
                "can_force": promotion_may_force(user=request.user),
            }
        return super().change_view(request, object_id, form_url, extra_context=context)


# The service names the providers by their model fields; the form by what the user picks.
_FORM_FIELDS = {"student_provider": "student", "teacher_provider": "teacher"}


def _form_errors(form: forms.Form, error: ApplicationError) -> None:
    """Put a service's error on the form fields it names, the rest on the form."""
    placed = False
    for key, problems in (error.errors or {}).items():
        name = _FORM_FIELDS.get(key, key)
        lines = problem_lines({key: problems})
        if name in form.fields:
            form.add_error(name, "; ".join(line.split(": ", 1)[-1] for line in lines))
            placed = True
    if not placed:
        form.add_error(None, error.message)


def _back(pk: int) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("admin:evaluations_optimizationrun_change", args=[pk]))


def optimization_cancel_view(request: HttpRequest, pk: int, *, model_admin) -> HttpResponse:
    if request.method != "POST" or not model_admin.has_cancel_permission(request):
        raise PermissionDenied
    run = optimization_cancel(run=optimization_get(run_id=pk))
    if run.status == RunStatus.CANCELLED:
        messages.success(request, f"Cancelled {run}.")
    elif run.cancel_requested and not run.finished:
        messages.info(request, f"Asked {run} to stop: it stops at its next example or trial.")
    else:
        messages.warning(request, f"{run} had already ended ({run.get_status_display()}).")
    return _back(pk)


def optimization_promote_view(request: HttpRequest, pk: int, *, model_admin) -> HttpResponse:
    if request.method != "POST" or not model_admin.has_promote_permission(request):
        raise PermissionDenied
    run = optimization_get(run_id=pk)
    try:
        promotion = optimization_promote(
            run=run,
            force=request.POST.get("force") == "on",
            reason=request.POST.get("reason", "")[:2000],
            user=request.user,
        )
    except ApplicationError as error:
        messages.error(request, f"Not promoted: {error.message}")
    else:
        forced = " (forced)" if promotion.forced else ""
        messages.success(
            request,
            f"Promoted: {promotion.alias_name} now points at version "
            f"{promotion.to_version.number} ({_score(promotion.to_score)}, was "
            f"{_score(promotion.from_score)}){forced}.",
        )
    return _back(pk)


def optimization_new_view(request: HttpRequest, *, model_admin) -> HttpResponse:
    """Start an optimization run: the form names everything, the service checks it."""
    if not model_admin.has_create_permission(request):
        raise PermissionDenied
    initial = {
        name: request.GET[name]
        for name in ("signature", "version", "dataset", "metric", "student", "optimizer")
        if name in request.GET
    }
    form = OptimizationForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            run = optimization_create_named(
                signature=data["signature"].name,
                version=data["version"],
                dataset=data["dataset"],
                train_split=data["train_split"],
                dev_split=data["dev_split"],
                metric=data["metric"],
                student=data["student"].name,
                teacher=data["teacher"].name if data["teacher"] else None,
                optimizer=data["optimizer"],
                params=data["params"],
                seed=data["seed"],
                user=request.user,
            )
        except ApplicationError as error:
            _form_errors(form, error)
        else:
            messages.success(request, f"Queued {run}.")
            return _back(run.pk)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "New optimization",
        "form": form,
        "optimizers": optimizer_catalogue(),
    }
    return TemplateResponse(request, "admin/evaluations/optimizationrun/new.html", context)
