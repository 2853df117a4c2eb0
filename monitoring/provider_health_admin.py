"""The provider pages of the admin with their live health.

Providers' own `ProviderAdmin` shows the configuration, the breaker's state and the buttons;
the call figures come from the executions' attempts, which providers cannot read, so monitoring
re-registers the provider admin with them: a health column on the list (the whole page's
figures in one `provider_health_list`, a fixed number of queries) and a recent-calls panel on
each provider's page.
"""

from datetime import datetime

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.utils import timezone
from django.utils.html import format_html

from monitoring.provider_health import (
    ProviderHealth,
    provider_health,
    provider_health_list,
    provider_health_window,
)
from providers.admin import ProviderAdmin
from providers.models import Provider

SECONDS = "%Y-%m-%d %H:%M:%S %Z"


class ProviderHealthChangeList(ChangeList):
    def get_results(self, request) -> None:
        super().get_results(request)
        # On the rows themselves, not on the admin (one instance serves every request).
        healths = provider_health_list(
            providers=self.result_list, window=provider_health_window(), now=timezone.now()
        )
        for provider in self.result_list:
            provider.health = healths[provider.pk]


class ProviderHealthAdmin(ProviderAdmin):
    list_display = [*ProviderAdmin.list_display[:-1], "health", ProviderAdmin.list_display[-1]]
    readonly_fields = [*ProviderAdmin.readonly_fields, "recent_calls"]

    class Media:
        css = {"all": ["monitoring/provider_health.css"]}

    def get_changelist(self, request, **kwargs):
        return ProviderHealthChangeList

    def get_fieldsets(self, request, obj=None):
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None:
            return fieldsets
        # Right after the breaker's state: the calls that drove it.
        at = next(
            (index + 1 for index, (name, _) in enumerate(fieldsets) if name == "Circuit breaker"),
            len(fieldsets),
        )
        return [*fieldsets[:at], ("Recent calls", {"fields": ["recent_calls"]}), *fieldsets[at:]]

    @admin.display(description="health")
    def health(self, provider: Provider) -> str:
        health: ProviderHealth = provider.health
        calls = health.calls
        rates = (
            f"{calls.error_rate:.0f}% errors, p95 {calls.latency_p95_s:.2f} s"
            if calls.calls
            else "no calls"
        )
        return format_html(
            '{} <span class="provider-health-figures">{} in {}</span>',
            _state(health),
            rates,
            _window(health),
        )

    @admin.display(description="recent calls")
    def recent_calls(self, provider: Provider) -> str:
        if provider.pk is None:
            return "-"
        health = provider_health(
            provider=provider, window=provider_health_window(), now=timezone.now()
        )
        calls = health.calls
        if calls.calls:
            # Numbers only: nothing to escape, and format_html would format them as text.
            figures = (
                f"{calls.calls} calls, {calls.failed} failed ({calls.error_rate:.0f}%), "
                f"{calls.slow} slow ({calls.slow_call_rate:.0f}%); latency "
                f"p50 {calls.latency_p50_s:.3f} s, p95 {calls.latency_p95_s:.3f} s, "
                f"p99 {calls.latency_p99_s:.3f} s"
            )
        else:
            figures = "no calls"
        sampled = " (the most recent only)" if calls.sampled else ""
        error = health.last_error
        last_error = (
            format_html("{} <code>{}</code> {}", _at(error.at), error.code, error.message)
            if error
            else "none"
        )
        return format_html(
            '<div class="provider-health">{}<br>calls since {}{}: {}; {} refused by the breaker'
            "<br>last error: {}<br>as of {}</div>",
            _state(health),
            _at(calls.since),
            sampled,
            figures,
            calls.rejected,
            last_error,
            _at(health.as_of),
        )


def _state(health: ProviderHealth) -> str:
    status = health.breaker
    label = "ready for a trial" if status.ready_for_trial else status.effective_state
    if status.forced:
        label = "forced open"
    return format_html(
        '<span class="provider-health-state provider-health-{}" title="{}">{}</span>',
        "trial" if status.ready_for_trial else status.effective_state,
        status.summary,
        label,
    )


def _window(health: ProviderHealth) -> str:
    minutes = (health.as_of - health.calls.since).total_seconds() / 60
    return f"{minutes:g} min"


def _at(moment: datetime) -> str:
    return f"{timezone.localtime(moment):{SECONDS}}"


admin.site.unregister(Provider)
admin.site.register(Provider, ProviderHealthAdmin)
