"""The operator's console in a real browser: the dashboard's charts, a failure record and a
provider page, each saved as a screenshot under var/screenshots/.

The selectors are those of templates/monitoring/dashboard.html and monitoring/charts.py (the
charts), executions/admin.py (the failure log's `prompt_text` and `raw_output_text`) and
templates/admin/providers/provider/change_form.html with monitoring/provider_health_admin.py
(the buttons and the health panel).
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from executions.models import Execution, ExecutionFailure
from executions.services.create import execution_create
from providers.models import CircuitBreaker
from tests.support.browser import screenshot, screenshot_of
from tests.support.bulk import BulkWorld, bulk_executions
from tests.support.engines import BROKEN_ENGINE, ECHO_ENGINE
from tests.support.factories import (
    APIKeyFactory,
    ProviderFactory,
    SignatureVersionFactory,
    StaffUserFactory,
)
from tests.support.specs import QA_LEVEL_INPUTS, QA_LEVEL_SPEC

# The marks of the charts that stand for data: bars, dots and the lines through them.
DATA_MARKS = "svg.chart rect, svg.chart circle, svg.chart polyline"


@pytest.fixture
def history(browser_user):
    """Executions that ran (inline, on commit): three answered, two failed."""
    ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    ProviderFactory(name="broken", engine_path=BROKEN_ENGINE)
    SignatureVersionFactory(signature__name="qa", spec=QA_LEVEL_SPEC)
    for provider in ["echo", "echo", "echo", "broken", "broken"]:
        execution_create(signature="qa", inputs=QA_LEVEL_INPUTS, provider=provider)
    assert Execution.objects.filter(status="succeeded").count() == 3
    assert Execution.objects.filter(status="failed").count() == 2


def test_the_dashboard_draws_its_charts_with_data(browser_page, history):
    page = browser_page
    page.goto("/admin/")
    expect(page.locator("#console-title")).to_be_visible()
    charts = page.locator(".console-charts svg.chart")
    assert charts.count() >= 3
    for index in range(charts.count()):
        box = charts.nth(index).bounding_box()
        # Drawn at a readable size (a one-row bar chart is short, never flat).
        assert box and box["width"] > 100 and box["height"] > 10
    marks = page.locator(DATA_MARKS)
    assert marks.count() > 0
    drawn = [marks.nth(index).bounding_box() for index in range(marks.count())]
    assert any(box and box["width"] > 0 and box["height"] > 0 for box in drawn)
    # No chart fell back to its empty state: each had data to draw.
    assert page.locator(".console-charts figure.chart-box p.empty").count() == 0
    screenshot(page, "console-dashboard")


def test_a_failure_record_shows_the_prompt_and_the_raw_output(browser_page, browser_user):
    ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    # The echo engine answers "Paris", which is no integer: a parse failure with a raw output.
    spec = QA_LEVEL_SPEC | {"output_fields": [{"name": "answer", "type": "int"}]}
    SignatureVersionFactory(signature__name="count", spec=spec)
    execution_create(signature="count", inputs=QA_LEVEL_INPUTS, provider="echo")
    failure = ExecutionFailure.objects.get()
    page = browser_page
    page.goto(f"/admin/executions/executionfailure/{failure.pk}/change/")
    prompt = page.locator(".field-prompt_text pre")
    expect(prompt).to_be_visible()
    expect(prompt).to_contain_text("What is the capital of France?")
    raw_output = page.locator(".field-raw_output_text pre")
    expect(raw_output).to_be_visible()
    expect(raw_output).to_contain_text("Paris")
    screenshot(page, "console-failure-record")


def test_a_provider_page_shows_its_health_and_its_buttons_work(browser_page, history):
    provider = ProviderFactory._meta.model.objects.get(name="echo")
    page = browser_page
    page.goto(f"/admin/providers/provider/{provider.pk}/change/")
    expect(page.locator(".provider-health").first).to_be_visible()
    buttons = page.locator(".provider-actions button")
    expect(buttons).to_have_count(3)
    screenshot(page, "console-provider")
    page.click(".provider-actions button:has-text('Force the breaker open')")
    expect(page.locator(".messagelist li").first).to_contain_text("forced open")
    expect(page.locator(".provider-health-state")).to_have_text("forced open")
    assert CircuitBreaker.objects.get(provider=provider).state == "open"
    page.click(".provider-actions button:has-text('Reset the breaker')")
    expect(page.locator(".provider-health-state")).to_have_text("closed")
    assert CircuitBreaker.objects.get(provider=provider).state == "closed"
    screenshot(page, "console-provider-reset")


def test_a_busy_hour_reads_at_a_glance(browser_page, browser_user):
    """The dashboard of an hour with traffic on every minute (the README's screenshot)."""
    world = BulkWorld(
        versions=[
            SignatureVersionFactory(signature__name=name)
            for name in ("qa", "summarize", "sentiment", "classify_topic")
        ],
        providers=[
            ProviderFactory(name=name, engine_path=ECHO_ENGINE)
            for name in ("local-default", "remote-gpt", "remote-backup")
        ],
        api_keys=[APIKeyFactory(name=name) for name in ("web-app", "batch-jobs")],
        users=[StaffUserFactory(username="operator")],
    )
    bulk_executions(world=world, count=1500, now=timezone.now(), span=timedelta(hours=1))
    page = browser_page
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto("/admin/")
    expect(page.locator("#console-title")).to_be_visible()
    # Every minute of the hour has executions: the per-minute chart draws a bar for each.
    assert page.locator(".console-charts svg.chart rect").count() >= 60
    assert page.locator(".console-charts figure.chart-box p.empty").count() == 0
    screenshot(page, "console-dashboard-busy")
    # The dashboard alone: the README's docs/console-dashboard.png is a copy of it.
    screenshot_of(page.locator("section.console"), "console-dashboard-section")
