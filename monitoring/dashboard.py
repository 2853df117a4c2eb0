"""The operator's console in the admin: the dashboard on the admin index, and usage per client.

Views only: the figures come from `monitoring.selectors` (a fixed number of queries), the
charts from `monitoring.charts`. Both pages need the permission to view executions; a staff
user without it sees the plain admin index.
"""

from datetime import timedelta

from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from monitoring import charts
from monitoring.selectors import (
    PERCENTILES,
    Console,
    ConsoleWindow,
    ExecutionStats,
    console_get,
    usage_by_client,
    window_bounds,
)

CONSOLE_PERMISSION = "executions.view_execution"
# The most rows the small bar charts show (the tables list every group).
CHART_ROWS = 10


def console_window(request: HttpRequest) -> str:
    """The window the page asks for (`?window=`); an unknown one falls back to the hour, as
    a page (unlike the API) has no one to tell."""
    asked = request.GET.get("window", "")
    return asked if asked in ConsoleWindow.values else ConsoleWindow.HOUR


def _windows(current: str) -> list[dict]:
    return [
        {"value": value, "label": label, "current": value == current}
        for value, label in ConsoleWindow.choices
    ]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.2f} s"
    if value < 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h" if value < 86400 else f"{value / 86400:.1f} days"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def stats_row(label: str, stats: ExecutionStats) -> dict:
    """One table row of `stats`, formatted for a person."""
    return {
        "label": label,
        "total": stats.total,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "success_rate": _percent(stats.success_rate),
        "input_tokens": stats.input_tokens,
        "output_tokens": stats.output_tokens,
        **{f"p{p}": _seconds(stats.latency_s.get(p)) for p in PERCENTILES},
    }


def _per_minute(value: int, bucket: timedelta) -> float:
    return value / (bucket.total_seconds() / 60)


def _charts(console: Console) -> dict:
    starts = [point.start for point in console.series]
    stats = [point.stats for point in console.series]
    every = (
        "per minute"
        if console.bucket <= timedelta(minutes=1)
        else f"per minute, mean of each {console.bucket.total_seconds() / 60:.0f}-minute bucket"
    )
    common = {"starts": starts, "bucket": console.bucket, "empty": "No executions in this window."}
    return {
        "executions": charts.stacked_bars(
            title=f"Executions {every}",
            unit="executions/min",
            series=[
                charts.Series(
                    "Succeeded",
                    "series-ok",
                    [_per_minute(item.succeeded, console.bucket) for item in stats],
                ),
                charts.Series(
                    "Failed",
                    "series-failed",
                    [_per_minute(item.failed, console.bucket) for item in stats],
                ),
            ],
            **common,
        ),
        "latency": charts.lines(
            title="Latency (execution time)",
            unit="s",
            series=[
                charts.Series(
                    f"p{percentile}",
                    f"series-p{percentile}",
                    [item.latency_s.get(percentile) for item in stats],
                )
                for percentile in (50, 95)
            ],
            format_value=lambda value: f"{value:.3g}",
            **common,
        ),
        "tokens": charts.stacked_bars(
            title=f"Tokens {every}",
            unit="tokens/min",
            series=[
                charts.Series(
                    "Input",
                    "series-input",
                    [_per_minute(item.input_tokens, console.bucket) for item in stats],
                ),
                charts.Series(
                    "Output",
                    "series-output",
                    [_per_minute(item.output_tokens, console.bucket) for item in stats],
                ),
            ],
            **common,
        ),
        "by_signature": charts.horizontal_bars(
            title="Executions per signature",
            rows=[
                (group.label, group.stats.succeeded, group.stats.failed)
                for group in console.by_signature[:CHART_ROWS]
            ],
            empty="No executions in this window.",
        ),
        "by_provider": charts.horizontal_bars(
            title="Executions per provider",
            rows=[
                (group.label, group.stats.succeeded, group.stats.failed)
                for group in console.by_provider[:CHART_ROWS]
            ],
            empty="No executions in this window.",
        ),
    }


def console_context(request: HttpRequest) -> dict:
    """The dashboard's part of the admin index's context; empty without the permission."""
    if not request.user.has_perm(CONSOLE_PERMISSION):
        return {}
    console = console_get(window=console_window(request))
    minutes = (console.until - console.since).total_seconds() / 60
    now = timezone.now()
    return {
        "console": console,
        "console_windows": _windows(console.window),
        "console_summary": stats_row("All", console.summary)
        | {
            "tokens_per_minute": f"{console.summary.tokens / minutes:,.1f}",
            "executions_per_minute": f"{console.summary.total / minutes:,.2f}",
            "queued": sum(queue.queued for queue in console.queues),
            **{f"wait_p{p}": _seconds(console.queue_wait_s.get(p)) for p in PERCENTILES},
        },
        "console_charts": _charts(console),
        "console_signatures": [stats_row(g.label, g.stats) for g in console.by_signature],
        "console_providers": [stats_row(g.label, g.stats) for g in console.by_provider],
        "console_queues": [
            {
                "cluster": queue.cluster,
                "queued": queue.queued,
                "oldest_wait": _seconds((now - queue.oldest_queued_at).total_seconds())
                if queue.oldest_queued_at
                else "-",
            }
            for queue in console.queues
        ],
    }


def usage_view(request: HttpRequest, *, site: AdminSite) -> HttpResponse:
    """Usage per client (API key, or a staff user's own session requests) over the window."""
    if not request.user.has_perm(CONSOLE_PERMISSION):
        raise PermissionDenied
    window = console_window(request)
    since, until = window_bounds(window=window)
    clients = usage_by_client(since=since, until=until)
    context = {
        **site.each_context(request),
        "title": "Usage per client",
        "console_windows": _windows(window),
        "since": since,
        "until": until,
        "clients": [stats_row(client.name, client.stats) for client in clients],
    }
    return TemplateResponse(request, "monitoring/usage.html", context)
