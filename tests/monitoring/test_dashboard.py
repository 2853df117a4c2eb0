"""The dashboard on the admin index: right figures, readable charts, bounded queries."""

import re
import subprocess
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from executions.models import Execution
from monitoring import charts
from monitoring.selectors import console_get
from providers.breakers import breaker_force_open
from tests.support.bulk import bulk_executions, bulk_world
from tests.support.engines import ECHO_ENGINE
from tests.support.factories import ProviderFactory, SignatureVersionFactory

INDEX = "/admin/"
# The dashboard's own queries (12), plus the admin's session, user and permission lookups;
# the same bound holds the usage page, the executions list and the usage API.
MAX_QUERIES = 16


def _execution(version, provider, *, status, queued_at, seconds=None, tokens=(0, 0), **fields):
    finished = status in Execution.TERMINAL_STATUSES
    started_at = queued_at + timedelta(seconds=1) if seconds is not None else None
    return Execution.objects.create(
        signature_version=version,
        requested_provider=provider,
        provider=provider if status == Execution.Status.SUCCEEDED else None,
        status=status,
        queued_at=queued_at,
        started_at=started_at,
        heartbeat_at=started_at,
        finished_at=(started_at or queued_at) + timedelta(seconds=seconds or 0)
        if finished
        else None,
        execution_time_s=seconds,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        **fields,
    )


@pytest.fixture
def hand_made(db):
    """Two signatures on two providers, in three minutes of the last hour:

    minute -3: qa succeeded in 1..10 s (ten executions, 10 and 2 tokens each);
    minute -2: qa failed in 20 s, qa timed out in 30 s, qa cancelled;
    minute -1: summarize succeeded in 0.5 s on `second`, one queued.
    """
    # Four and a half minutes into a quarter hour, so the three minutes share the day's
    # quarter-hour bucket; and in the past, so the pages (whose window ends now) show them.
    real_now = timezone.now()
    quarter = real_now.replace(minute=real_now.minute // 15 * 15, second=0, microsecond=0)
    now = quarter + timedelta(minutes=4, seconds=30)
    if now > real_now:
        now -= timedelta(minutes=15)
    qa = SignatureVersionFactory(signature__name="qa")
    summarize = SignatureVersionFactory(signature__name="summarize")
    first = ProviderFactory(name="first", engine_path=ECHO_ENGINE)
    second = ProviderFactory(name="second", engine_path=ECHO_ENGINE)
    for seconds in range(1, 11):
        _execution(
            qa,
            first,
            status="succeeded",
            queued_at=now - timedelta(minutes=3),
            seconds=float(seconds),
            tokens=(10, 2),
        )
    _execution(
        qa,
        first,
        status="failed",
        queued_at=now - timedelta(minutes=2),
        seconds=20.0,
        error_code="provider_error",
        error_cause="provider_error",
    )
    _execution(qa, first, status="timed_out", queued_at=now - timedelta(minutes=2), seconds=30.0)
    _execution(qa, first, status="cancelled", queued_at=now - timedelta(minutes=2))
    _execution(
        summarize, second, status="succeeded", queued_at=now - timedelta(minutes=1), seconds=0.5
    )
    _execution(summarize, second, status="queued", queued_at=now - timedelta(minutes=1))
    return now


def test_the_figures_are_right(hand_made):
    console = console_get(window="hour", now=hand_made)
    summary = console.summary
    assert (summary.total, summary.succeeded, summary.failed) == (15, 11, 2)
    assert (summary.cancelled, summary.in_flight) == (1, 1)
    assert summary.success_rate == pytest.approx(11 / 13)
    assert (summary.input_tokens, summary.output_tokens) == (100, 20)
    # Thirteen finished times 0.5, 1..10, 20, 30: ranks 7, 13, 13.
    assert summary.latency_s == {50: 6.0, 95: 30.0, 99: 30.0}

    by_signature = {group.label: group.stats for group in console.by_signature}
    assert [group.label for group in console.by_signature] == ["qa", "summarize"]
    assert by_signature["qa"].latency_s == {50: 6.0, 95: 30.0, 99: 30.0}
    assert by_signature["summarize"].latency_s == {50: 0.5, 95: 0.5, 99: 0.5}
    assert by_signature["summarize"].success_rate == 1.0
    # A failed execution has no answering provider: it counts for the one it asked.
    by_provider = {group.label: group.stats for group in console.by_provider}
    assert (by_provider["first"].total, by_provider["first"].failed) == (13, 2)
    assert by_provider["second"].total == 2

    counts = {point.start: point.stats for point in console.series if point.stats.total}
    minute = hand_made.replace(second=0)
    assert {start: stats.total for start, stats in counts.items()} == {
        minute - timedelta(minutes=3): 10,
        minute - timedelta(minutes=2): 3,
        minute - timedelta(minutes=1): 2,
    }
    assert counts[minute - timedelta(minutes=3)].latency_s == {50: 5.0, 95: 10.0, 99: 10.0}
    assert counts[minute - timedelta(minutes=2)].failed == 2
    assert len(console.series) == 61  # the minute the window starts in, then one a minute

    assert [(queue.cluster, queue.queued) for queue in console.queues] == [("default", 1)]
    # Each claimed execution waited one second.
    assert console.queue_wait_s == {50: 1.0, 95: 1.0, 99: 1.0}
    assert [execution.status for execution in console.latest_failures] == ["timed_out", "failed"]


def test_windows_bucket_by_minute_then_by_quarter_hour_then_by_hour(hand_made):
    day = console_get(window="day", now=hand_made)
    assert len(day.series) == 97
    assert day.series[1].start - day.series[0].start == timedelta(minutes=15)
    quarter = hand_made - timedelta(minutes=4, seconds=30)
    assert [(p.start, p.stats.total) for p in day.series if p.stats.total] == [(quarter, 15)]
    week = console_get(window="week", now=hand_made)
    assert len(week.series) == 169
    assert sum(point.stats.total for point in week.series) == 15
    assert week.series[1].start - week.series[0].start == timedelta(hours=1)


def test_executions_outside_the_window_do_not_count(hand_made):
    later = console_get(window="hour", now=hand_made + timedelta(hours=2))
    assert later.summary.total == 0
    assert later.summary.latency_s == {}
    assert later.summary.success_rate is None


def test_the_index_opens_on_the_dashboard(admin_client, hand_made):
    breaker_force_open(provider=ProviderFactory(name="flaky", engine_path=ECHO_ENGINE))
    page = admin_client.get(INDEX)
    html = page.content.decode()
    assert page.status_code == 200
    assert "Dashboard" in html and "84.6%" in html  # 11 of 13
    # The charts: inline SVG with tooltips and a legend, and the app list still below.
    assert html.count('<svg class="chart"') == 5
    assert "<title>" in html and 'class="legend"' in html
    assert html.index('id="console-title"') < html.index('id="content-main"')
    # Breakers with their last transition; failures linking to their records.
    assert "open (forced)" in html and "closed → open" in html
    failed = Execution.objects.get(status="failed")
    assert reverse("admin:executions_execution_change", args=[failed.pk]) in html
    assert "Provider error" in html  # the failure's cause
    assert reverse("admin:monitoring_usage") in html


def test_the_page_needs_no_inline_style_and_its_stylesheet_exists(admin_client, hand_made):
    html = admin_client.get(INDEX).content.decode()
    dashboard = html[html.index('id="console-title"') : html.index('id="content-main"')]
    assert "style=" not in dashboard
    assert "<script" not in dashboard
    stylesheet = re.search(r'href="/static/(monitoring/[^"]+\.css)"', html).group(1)
    assert finders.find(stylesheet)


def test_chart_text_is_escaped():
    chart = str(charts.horizontal_bars(title="T & co", rows=[("<b>x</b>", 3, 1)], empty="none"))
    assert "<b>" not in chart and "&lt;b&gt;x&lt;/b&gt;" in chart and "T &amp; co" in chart
    assert "<title>&lt;b&gt;x&lt;/b&gt;: 1 failed</title>" in chart


def test_the_window_is_chosen_with_links(admin_client, hand_made):
    week = admin_client.get(INDEX, {"window": "week"}).content.decode()
    assert "<strong>Last week</strong>" in week and 'href="?window=hour"' in week
    # Hourly buckets: time labels carry the day.
    assert re.search(r">(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d:00<", week)
    # An unknown window is the hour, not an error page.
    unknown = admin_client.get(INDEX, {"window": "year"})
    assert unknown.status_code == 200
    assert "<strong>Last hour</strong>" in unknown.content.decode()


def test_an_empty_window_says_so(admin_client, db):
    html = admin_client.get(INDEX).content.decode()
    assert "No executions in this window." in html
    assert '<svg class="chart"' not in html
    assert "No failures." in html


def test_staff_without_the_permission_see_the_plain_index(client, make_user):
    client.force_login(make_user("viewer", is_staff=True))
    page = client.get(INDEX)
    assert page.status_code == 200
    assert 'id="console-title"' not in page.content.decode()
    viewer = make_user("reader", is_staff=True, perms=("executions.view_execution",))
    client.force_login(viewer)
    assert 'id="console-title"' in client.get(INDEX).content.decode()


@pytest.mark.django_db
def test_every_console_page_runs_a_bounded_number_of_queries_on_10000_executions(
    admin_client, django_assert_max_num_queries
):
    world = bulk_world()
    bulk_executions(world=world, count=10_000, now=timezone.now())
    assert Execution.objects.count() == 10_000
    for window in ("hour", "day", "week"):
        with django_assert_max_num_queries(MAX_QUERIES):
            page = admin_client.get(INDEX, {"window": window})
        assert page.status_code == 200 and '<svg class="chart"' in page.content.decode()
    with django_assert_max_num_queries(MAX_QUERIES):
        usage = admin_client.get(reverse("admin:monitoring_usage"), {"window": "week"})
    assert "bulk-client-0" in usage.content.decode()
    with django_assert_max_num_queries(MAX_QUERIES):
        changelist = admin_client.get(reverse("admin:executions_execution_changelist"))
    assert changelist.status_code == 200
    # Every other list an operator reads, filtered the way the console links to them.
    version = world.versions[0]
    lists = [
        ("admin:executions_execution_changelist", {"error_cause": "timeout"}),
        ("admin:executions_execution_changelist", {"signature_version__id__exact": version.pk}),
        ("admin:executions_executionfailure_changelist", {}),
        ("admin:executions_executionfailure_changelist", {"cause": "provider_error"}),
        ("admin:executions_executionattempt_changelist", {}),
        ("admin:providers_provider_changelist", {}),
        ("admin:monitoring_serviceprocess_changelist", {}),
        ("admin:django_q_success_changelist", {}),
    ]
    for name, query in lists:
        with django_assert_max_num_queries(MAX_QUERIES):
            page = admin_client.get(reverse(name), query)
        assert page.status_code == 200, (name, query)
    # The API, for a client with about a quarter of the executions: its key, the throttle's
    # counter, then the figures.
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {world.api_keys[0].raw_key}")
    with django_assert_max_num_queries(MAX_QUERIES):
        api = client.get("/api/v1/usage", {"window": "week"})
    assert api.status_code == 200
    assert api.json()["executions"] == Execution.objects.filter(api_key=world.api_keys[0]).count()


SQLITE_CHECK = """
import django
django.setup()
from datetime import timedelta
from django.core.management import call_command
from django.utils import timezone
from executions.models import Execution
from monitoring import charts
from monitoring.selectors import console_get
from tests.support.factories import ProviderFactory, SignatureVersionFactory
call_command("migrate", verbosity=0)
version = SignatureVersionFactory(signature__name="qa")
provider = ProviderFactory(name="echo")
now = timezone.now()
for seconds in range(1, 11):
    queued_at = now - timedelta(minutes=seconds)
    Execution.objects.create(
        signature_version=version, requested_provider=provider, status="succeeded",
        queued_at=queued_at, started_at=queued_at + timedelta(seconds=seconds),
        finished_at=queued_at + timedelta(seconds=2 * seconds), execution_time_s=seconds,
    )
for window in ("hour", "day", "week"):
    console = console_get(window=window, now=now)
    counted = sum(point.stats.total for point in console.series)
    print(window, counted, console.summary.latency_s[50], console.queue_wait_s[95])
"""


def test_the_figures_are_the_same_on_sqlite(python, repo_root, sqlite_env):
    """The quick start's database: the portable percentiles, buckets and waits."""
    result = subprocess.run(
        [python, "-c", SQLITE_CHECK],
        cwd=repo_root,
        env=sqlite_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split("\n")
    # Ten executions in the last hour, all in each window's buckets: the p50 of 1..10 s is
    # 5 s, the p95 of the waits (also 1..10 s) 10 s.
    assert lines[:3] == [f"{window} 10 5.0 10.0" for window in ("hour", "day", "week")]
