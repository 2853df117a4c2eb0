"""Admin for provider configurations: the fallback list inline, the hardware report a click away.

The API key of an `openai` provider is never shown: only its variable name and whether the
variable is set.
"""

from datetime import datetime

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyAdminMixin
from providers import breakers, selectors, services
from providers.lms import provider_api_key_configured
from providers.models import (
    BreakerEvent,
    CircuitBreaker,
    Provider,
    ProviderFallback,
    ProviderPoolMember,
)
from providers.probe import provider_check_where_it_runs

# Timestamps on the operator's pages: to the second, in the server's time zone.
SECONDS = "%Y-%m-%d %H:%M:%S %Z"


class FallbackForm(forms.ModelForm):
    class Meta:
        model = ProviderFallback
        fields = ["fallback", "position"]

    def validate_unique(self) -> None:
        # Reordering swaps positions between rows, which row-by-row uniqueness checks would
        # reject; the formset validates the list as a whole and the service rewrites it.
        return


class FallbackFormSet(forms.BaseInlineFormSet):
    def ordered_fallbacks(self) -> list[Provider]:
        rows = [
            form.cleaned_data
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("fallback")
        ]
        rows.sort(key=lambda row: row.get("position") or 0)
        return [row["fallback"] for row in rows]

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        errors = services.provider_fallback_errors(
            provider=self.instance, fallbacks=self.ordered_fallbacks()
        )
        if errors:
            raise ValidationError(errors)


class FallbackInline(admin.TabularInline):
    model = ProviderFallback
    fk_name = "provider"
    form = FallbackForm
    formset = FallbackFormSet
    extra = 1
    ordering = ["position"]
    autocomplete_fields = ["fallback"]
    verbose_name = "fallback"
    verbose_name_plural = "fallbacks (tried in order of position)"


class PoolMemberForm(forms.ModelForm):
    class Meta:
        model = ProviderPoolMember
        fields = ["member", "weight", "position"]

    def validate_unique(self) -> None:
        # As for fallbacks: the formset checks the members as a whole, the service rewrites them.
        return


class PoolMemberFormSet(forms.BaseInlineFormSet):
    def ordered_members(self) -> list[tuple[Provider, int]]:
        rows = [
            form.cleaned_data
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("member")
        ]
        rows.sort(key=lambda row: row.get("position") or 0)
        return [(row["member"], row.get("weight") or 1) for row in rows]

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        # The provider as the form above would save it (its kind may change in the same post):
        # its own members, and its place in the pools it belongs to.
        errors = services.provider_pool_errors(
            pool=self.instance, members=[member for member, _ in self.ordered_members()]
        )
        if self.instance.pk is not None:
            errors += services.provider_membership_errors(provider=self.instance)
        if errors:
            raise ValidationError(errors)


class PoolMemberInline(admin.TabularInline):
    model = ProviderPoolMember
    fk_name = "pool"
    form = PoolMemberForm
    formset = PoolMemberFormSet
    extra = 1
    ordering = ["position"]
    autocomplete_fields = ["member"]
    verbose_name = "pool member"
    verbose_name_plural = "pool members (kind pool only: each call goes to one, by the policy)"


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "model",
        "adapter_value",
        "enabled",
        "pool_members",
        "fallback_chain",
        "api_key_configured",
        "updated_at",
    ]
    list_filter = ["kind", "enabled", "adapter"]
    search_fields = ["name", "model"]
    readonly_fields = ["api_key_configured", "breaker", "created_at", "updated_at"]
    inlines = [FallbackInline]
    change_list_template = "providers/admin/change_list.html"
    fieldsets = [
        (None, {"fields": ["name", "kind", "model", "enabled", "adapter"]}),
        ("Generation defaults", {"fields": ["max_tokens", "temperature", "top_p", "timeout_s"]}),
        ("Local (mlx)", {"fields": ["hardware_optimization", "serving_cluster"]}),
        ("Remote (openai)", {"fields": ["base_url", "api_key_env", "api_key_configured"]}),
        ("Custom engine", {"fields": ["engine_path"]}),
        ("Circuit breaker", {"fields": ["breaker"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    def get_fieldsets(self, request, obj=None):
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None or obj.kind != Provider.Kind.POOL:
            return fieldsets
        # A pool's policy and members once it is saved as a pool: the page of any other
        # provider, and the add page, have none to show.
        return [*fieldsets[:1], ("Pool", {"fields": ["policy"]}), *fieldsets[1:]]

    def get_inlines(self, request, obj=None):
        if obj is not None and obj.kind == Provider.Kind.POOL:
            return [PoolMemberInline, *self.inlines]
        return self.inlines

    def get_queryset(self, request) -> QuerySet:
        # The fallback links prefetched, for the list's fallback column.
        return selectors.provider_list(members=True)

    @admin.display(description="adapter", ordering="adapter")
    def adapter_value(self, provider: Provider) -> str:
        # The stored value: the labels (in the filter and the form) are too long for a column.
        return provider.adapter

    @admin.display(description="fallbacks")
    def fallback_chain(self, provider: Provider) -> str:
        return " → ".join(link.fallback.name for link in provider.fallback_links.all()) or "-"

    @admin.display(description="members")
    def pool_members(self, provider: Provider) -> str:
        return (
            ", ".join(
                f"{link.member.name} (weight {link.weight})" for link in provider.pool_members.all()
            )
            or "-"
        )

    @admin.display(boolean=True, description="API key set")
    def api_key_configured(self, provider: Provider) -> bool | None:
        return provider_api_key_configured(provider=provider)

    @admin.display(description="state now")
    def breaker(self, provider: Provider) -> str:
        if provider.pk is None:
            return "-"
        status = selectors.provider_breaker_status(provider=provider, now=timezone.now())
        transition = status.last_transition
        last = (
            format_html(
                "<br>last transition: {} {} &rarr; {}: {}",
                _at(transition.at),
                transition.from_state,
                transition.to_state,
                transition.reason,
            )
            if transition
            else ""
        )
        configure = ""
        breaker = CircuitBreaker.objects.filter(provider=provider).only("pk").first()
        if breaker is not None:
            configure = format_html(
                '<br><a href="{}">Thresholds and all transitions</a>',
                reverse("admin:providers_circuitbreaker_change", args=[breaker.pk]),
            )
        return format_html(
            "{}<br>stored: {} since {}{}{}",
            status.summary,
            status.state,
            _at(status.state_changed_at),
            last,
            configure,
        )

    def save_formset(self, request, form, formset, change) -> None:
        if isinstance(formset, FallbackFormSet):
            # Without committing: it records the added, changed and deleted rows for the
            # admin's change message; the service then rewrites the list as a whole.
            formset.save(commit=False)
            services.provider_set_fallbacks(
                provider=form.instance, fallbacks=formset.ordered_fallbacks()
            )
            return
        if isinstance(formset, PoolMemberFormSet):
            formset.save(commit=False)
            services.provider_set_members(pool=form.instance, members=formset.ordered_members())
            return
        super().save_formset(request, form, formset, change)

    def get_urls(self):
        def action(name: str):
            return path(
                f"<path:object_id>/{name}/",
                self.admin_site.admin_view(self.provider_action_view),
                {"action": name},
                name=f"providers_provider_{name.replace('-', '_')}",
            )

        return [
            path(
                "hardware/",
                self.admin_site.admin_view(self.hardware_view),
                name="providers_provider_hardware",
            ),
            *(action(name) for name in PROVIDER_ACTIONS),
            *super().get_urls(),
        ]

    def provider_action_view(self, request: HttpRequest, object_id: str, action: str):
        """The buttons of the provider's page: force the breaker open, reset it, run the
        check. POST only (the admin's CSRF protection applies); back to the page after."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        provider = self.get_object(request, unquote(object_id))
        if provider is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, provider):
            raise PermissionDenied
        who = request.user.get_username()
        if action == "breaker-force-open":
            breakers.breaker_force_open(provider=provider, reason=f"forced open by {who}")
            self.message_user(
                request,
                f"The breaker of {provider.name} is forced open: no calls until it is reset.",
                messages.WARNING,
            )
        elif action == "breaker-reset":
            breakers.breaker_reset(provider=provider, reason=f"reset by {who}")
            self.message_user(request, f"The breaker of {provider.name} is reset (closed).")
        else:
            check = provider_check_where_it_runs(
                provider=provider, wait_s=settings.EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S
            )
            if check.ok:
                self.message_user(
                    request,
                    f"Check of {provider.name}: answered {check.answer!r} ({check.figures}).",
                )
            else:
                self.message_user(
                    request, f"Check of {provider.name} failed: {check.error}", messages.ERROR
                )
        return HttpResponseRedirect(reverse("admin:providers_provider_change", args=[provider.pk]))

    def hardware_view(self, request: HttpRequest) -> HttpResponse:
        from providers.mlx.hardware import hardware_report

        context = {
            **self.admin_site.each_context(request),
            "title": "Hardware",
            "opts": self.model._meta,
            "report": [
                (key, _report_value(key, value)) for key, value in sorted(hardware_report().items())
            ],
        }
        return TemplateResponse(request, "providers/admin/hardware.html", context)


# The buttons on a provider's page, each a POST to `<provider>/<action>/`.
PROVIDER_ACTIONS = ("breaker-force-open", "breaker-reset", "check")


def _at(moment: datetime) -> str:
    return f"{timezone.localtime(moment):{SECONDS}}"


def _report_value(key: str, value: object) -> str:
    """One value of the hardware report as an operator reads it (the keys stay as in --json)."""
    if key.endswith("_bytes") and isinstance(value, int):
        return f"{filesizeformat(value)} ({value} bytes)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "none"
    return "-" if value is None else str(value)


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
        # Created on a provider's first call (or by `providers_breaker <provider> --show`, or
        # a button on the provider's page).
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
class BreakerEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
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
