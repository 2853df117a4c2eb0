"""The provider pages of the admin with their live health.

Providers' own `ProviderAdmin` shows the configuration, the breaker's state and the buttons;
the call figures come from the executions' attempts, which providers cannot read, so monitoring
re-registers the provider admin with them: a health column on the list (the whole page's
figures in one `provider_health_list`, a fixed number of queries) and a recent-calls panel on
each provider's page. A pool's calls are its members' calls: its column and panel show each
member's breaker, traffic, latency and calls in progress.
"""

from datetime import datetime

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from monitoring.provider_health import (
    ProviderHealth,
    provider_health,
    provider_health_list,
    provider_health_window,
)
from providers.admin import ProviderAdmin
from providers.models import CircuitBreaker, Provider
from providers.pools import pool_outstanding

SECONDS = "%Y-%m-%d %H:%M:%S %Z"


class ProviderHealthChangeList(ChangeList):
    def get_results(self, request) -> None:
        super().get_results(request)
        # On the rows themselves, not on the admin (one instance serves every request).
        # The pools' members too, on the page or not (their links are prefetched).
        providers = {provider.pk: provider for provider in self.result_list}
        for provider in self.result_list:
            for link in provider.pool_members.all():
                providers.setdefault(link.member_id, link.member)
        healths = provider_health_list(
            providers=providers.values(), window=provider_health_window(), now=timezone.now()
        )
        for provider in self.result_list:
            provider.health = healths[provider.pk]
            provider.member_healths = [
                healths[link.member_id] for link in provider.pool_members.all()
            ]


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
        if provider.kind == Provider.Kind.POOL:
            return _members_summary(provider.member_healths)
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
        if provider.kind == Provider.Kind.POOL:
            return _members_panel(provider)
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


def _admits_calls(health: ProviderHealth) -> bool:
    return health.enabled and health.breaker.effective_state != CircuitBreaker.State.OPEN


def _members_summary(healths: list[ProviderHealth]) -> str:
    if not healths:
        return "no members"
    admitting = sum(1 for health in healths if _admits_calls(health))
    return format_html(
        '{} <span class="provider-health-figures">{} of {} members take calls</span>',
        format_html_join(" ", "{}", ((_state(health),) for health in healths)),
        admitting,
        len(healths),
    )


def _members_panel(pool: Provider) -> str:
    """Each member's breaker, traffic and latency in the window, and its calls in progress."""
    now = timezone.now()
    links = list(pool.pool_members.select_related("member").order_by("position"))
    if not links:
        return "no members"
    members = [link.member for link in links]
    healths = provider_health_list(providers=members, window=provider_health_window(), now=now)
    outstanding = pool_outstanding(members=members, now=now)
    rows = []
    for link in links:
        health = healths[link.member_id]
        calls = health.calls
        latency = (
            f"p50 {calls.latency_p50_s:.3f} s, p95 {calls.latency_p95_s:.3f} s"
            if calls.calls
            else "-"
        )
        errors = f"{calls.error_rate:.0f}%" if calls.calls else "-"
        rows.append(
            (
                link.member.name,
                link.weight,
                _state(health),
                calls.calls,
                errors,
                latency,
                outstanding[link.member_id],
            )
        )
    table = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        rows,
    )
    return format_html(
        '<div class="provider-health">policy: {}; calls since {} (all of each member\'s calls, '
        "through the pool or not)<table><thead><tr><th>member</th><th>weight</th><th>breaker</th>"
        "<th>calls</th><th>errors</th><th>latency</th><th>in progress</th></tr></thead>"
        "<tbody>{}</tbody></table>as of {}</div>",
        pool.get_policy_display(),
        _at(now - provider_health_window()),
        table,
        _at(now),
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
