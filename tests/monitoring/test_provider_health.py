"""A provider's live health: the API, the provider pages of the admin, bounded queries.

The attempts come from real executions on the deterministic engines (django-q2 runs them
inline under the test settings); durations are then set on the rows where a test needs exact
percentiles.
"""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from executions.models import ExecutionAttempt
from executions.services.create import execution_create
from monitoring.provider_health import provider_health_list
from providers import breakers
from providers.models import CircuitBreaker
from tests.core.test_error_contract import assert_error_shape
from tests.support.engines import BROKEN_ENGINE, ECHO_ENGINE, LEAKY_ENGINE
from tests.support.factories import ProviderFactory, SignatureVersionFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

KEY_ENV = "DSPY_TOOLKIT_PROVIDER_KEY_HEALTH_TEST"
SECRET = "sk-health-secret-value-789"


@pytest.fixture
def run_on(django_capture_on_commit_callbacks):
    SignatureVersionFactory(signature__name="qa")

    def run(provider, times: int = 1) -> None:
        for _ in range(times):
            with django_capture_on_commit_callbacks(execute=True):
                execution_create(signature="qa", inputs={"question": "q"}, provider=provider.name)

    return run


@pytest.fixture
def echo(db):
    return ProviderFactory(name="echo", engine_path=ECHO_ENGINE)


@pytest.fixture
def broken(db):
    return ProviderFactory(name="broken", engine_path=BROKEN_ENGINE)


@pytest.fixture
def reader(db) -> APIClient:
    client = APIClient()
    client.force_login(StaffUserFactory(username="reader", perms=("providers.view_provider",)))
    return client


def health_url(name: str) -> str:
    return f"/api/v1/providers/{name}/health"


def test_latency_percentiles_and_rates_from_real_calls(reader, run_on, echo):
    run_on(echo, times=4)
    for duration, attempt in zip([4.0, 1.0, 3.0, 2.0], ExecutionAttempt.objects.all(), strict=True):
        ExecutionAttempt.objects.filter(pk=attempt.pk).update(duration_s=duration)
    body = reader.get(health_url("echo")).json()
    calls = body["calls"]
    assert (calls["calls"], calls["failed"], calls["rejected"], calls["slow"]) == (4, 0, 0, 0)
    assert (calls["error_rate"], calls["slow_call_rate"]) == (0.0, 0.0)
    # Linear between the closest ranks of 1, 2, 3, 4 (PostgreSQL's percentile_cont).
    assert calls["latency_p50_s"] == pytest.approx(2.5)
    assert calls["latency_p95_s"] == pytest.approx(3.85)
    assert calls["latency_p99_s"] == pytest.approx(3.97)
    assert calls["sampled"] is False
    assert body["last_error"] is None
    assert (body["provider"], body["enabled"]) == ("echo", True)
    breaker = body["breaker"]
    assert (breaker["state"], breaker["effective_state"], breaker["calls_in_window"]) == (
        "closed",
        "closed",
        4,
    )
    assert breaker["failure_rate"] == 0.0


def test_errors_rejections_and_the_last_error(reader, run_on, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    # Its failures quote its key.
    leaky = ProviderFactory(name="leaky", engine_path=LEAKY_ENGINE, api_key_env=KEY_ENV)
    run_on(leaky, times=2)
    breakers.breaker_force_open(provider=leaky, reason="maintenance")
    run_on(leaky)
    response = reader.get(health_url("leaky"))
    assert response.status_code == 200
    body = response.json()
    calls = body["calls"]
    assert (calls["calls"], calls["failed"], calls["rejected"]) == (2, 2, 1)
    assert calls["error_rate"] == 100.0
    last = ExecutionAttempt.objects.filter(outcome="failed").order_by("-started_at").first()
    assert body["last_error"]["code"] == last.error_code != ""
    assert body["last_error"]["message"] == last.error_message
    # The toolkit's message, not the engine's own text.
    assert "backend failed" not in response.content.decode()
    breaker = body["breaker"]
    assert (breaker["effective_state"], breaker["forced"], breaker["trials_resume_at"]) == (
        "open",
        True,
        None,
    )
    assert breaker["last_transition"]["reason"] == "maintenance"
    assert SECRET not in response.content.decode()


def test_an_open_breaker_past_its_wait_reads_ready_for_a_trial(reader, broken):
    breakers.breaker_get_or_create(provider=broken)
    opened_at = timezone.now() - timedelta(seconds=45)
    CircuitBreaker.objects.filter(provider=broken).update(
        state="open", state_changed_at=opened_at, open_duration_s=30
    )
    breaker = reader.get(health_url("broken")).json()["breaker"]
    assert (breaker["state"], breaker["effective_state"], breaker["ready_for_trial"]) == (
        "open",
        "half_open",
        True,
    )
    resume = (opened_at + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    assert breaker["trials_resume_at"] == resume
    assert "ready for a trial" in breaker["summary"]


def test_calls_outside_the_window_do_not_count(reader, run_on, echo, settings):
    run_on(echo, times=2)
    ExecutionAttempt.objects.update(started_at=timezone.now() - timedelta(hours=2))
    run_on(echo)
    settings.MONITORING_PROVIDER_HEALTH_WINDOW_S = 3600
    assert reader.get(health_url("echo")).json()["calls"]["calls"] == 1
    settings.MONITORING_PROVIDER_HEALTH_MAX_CALLS = 0
    calls = reader.get(health_url("echo")).json()["calls"]
    assert (calls["calls"], calls["sampled"], calls["latency_p50_s"]) == (0, True, None)


def test_unknown_provider_is_a_404_in_the_one_shape(reader):
    body = assert_error_shape(reader.get(health_url("nope")), 404)
    assert body["code"] == "provider_not_found"


def test_reading_health_needs_the_provider_view_permission(echo, api_client, staff_api_client):
    assert_error_shape(APIClient().get(health_url("echo")), 401)
    assert assert_error_shape(api_client.get(health_url("echo")), 403)["code"] == (
        "permission_denied"
    )
    assert_error_shape(staff_api_client.get(health_url("echo")), 403)


def test_health_of_many_providers_in_a_fixed_number_of_queries(
    run_on, echo, broken, django_assert_num_queries
):
    run_on(echo, times=2)
    run_on(broken, times=2)
    others = [ProviderFactory(name=f"quiet-{index}") for index in range(5)]
    with django_assert_num_queries(3):
        healths = provider_health_list(
            providers=[echo, broken, *others], window=timedelta(hours=1), now=timezone.now()
        )
    assert healths[echo.pk].calls.calls == 2
    assert healths[broken.pk].calls.failed == 2
    assert healths[others[0].pk].calls.calls == 0
    assert healths[others[0].pk].last_error is None


# The provider pages of the admin --------------------------------------------------------------


def test_the_provider_list_shows_health_in_bounded_queries(
    admin_client, run_on, echo, broken, django_assert_max_num_queries
):
    run_on(echo)
    breakers.breaker_force_open(provider=broken)
    url = reverse("admin:providers_provider_changelist")
    admin_client.get(url)
    with django_assert_max_num_queries(12) as few:
        admin_client.get(url)
    for index in range(6):
        ProviderFactory(name=f"more-{index}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = admin_client.get(url).content.decode()
    assert "provider-health-open" in page
    assert "forced open" in page
    assert "provider-health-closed" in page
    assert "0% errors" in page
    assert "monitoring/provider_health.css" in page


def test_the_provider_page_shows_the_breaker_the_calls_and_the_last_error(
    admin_client, run_on, broken
):
    run_on(broken, times=2)
    attempt = ExecutionAttempt.objects.order_by("-started_at").first()
    page = admin_client.get(reverse("admin:providers_provider_change", args=[broken.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "Recent calls" in text
    assert "2 calls, 2 failed (100%)" in text
    assert f"<code>{attempt.error_code}</code>" in text
    assert f"{timezone.localtime(attempt.started_at):%Y-%m-%d %H:%M:%S %Z}" in text
    assert "closed, 2 failed of 2 calls (100% failed, 0% slow)" in text
    # The buttons, each a POST form.
    for action in ("check", "breaker-force-open", "breaker-reset"):
        assert f'action="/admin/providers/provider/{broken.pk}/{action}/"' in text
