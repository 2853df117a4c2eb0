"""Usage per client: each client reads only its own through the API; staff read everyone's in
the admin."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from executions.models import Execution
from tests.core.test_error_contract import assert_error_shape
from tests.support.engines import ECHO_ENGINE
from tests.support.factories import APIKeyFactory, ProviderFactory, SignatureVersionFactory

USAGE = "/api/v1/usage"


def _finished(
    version, provider, *, status="succeeded", seconds=1.0, ago=timedelta(minutes=5), **who
):
    now = timezone.now()
    return Execution.objects.create(
        signature_version=version,
        requested_provider=provider,
        status=status,
        queued_at=now - ago,
        started_at=now - ago,
        finished_at=now - ago + timedelta(seconds=seconds),
        execution_time_s=seconds,
        input_tokens=10,
        output_tokens=3,
        **who,
    )


@pytest.fixture
def traffic(db, api_key, staff_user):
    """`api_key` (the `api_client`'s): 3 executions in the hour (1 failed) and 1 two days ago;
    another key: 5 executions; `staff_user`'s session: 2."""
    version = SignatureVersionFactory(signature__name="qa")
    other_version = SignatureVersionFactory(signature__name="summarize")
    provider = ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    for seconds in (0.2, 0.4):
        _finished(version, provider, seconds=seconds, api_key=api_key)
    _finished(other_version, provider, status="failed", seconds=3.0, api_key=api_key)
    _finished(version, provider, seconds=9.0, ago=timedelta(days=2), api_key=api_key)
    other = APIKeyFactory(name="other-client")
    for _ in range(5):
        _finished(version, provider, seconds=7.0, api_key=other)
    for _ in range(2):
        _finished(version, provider, seconds=0.1, created_by=staff_user)


def test_a_key_sees_only_its_own_usage(api_client, traffic):
    response = api_client.get(USAGE)
    assert response.status_code == 200
    body = response.json()
    assert body["window"] == "hour"
    assert (body["executions"], body["succeeded"], body["failed"]) == (3, 2, 1)
    assert body["success_rate"] == pytest.approx(2 / 3)
    assert (body["input_tokens"], body["output_tokens"]) == (30, 9)
    assert body["latency_s"] == {"p50": 0.4, "p95": 3.0, "p99": 3.0}
    assert {item["signature"]: item["executions"] for item in body["by_signature"]} == {
        "qa": 2,
        "summarize": 1,
    }


def test_the_window_widens_the_figures(api_client, traffic):
    body = api_client.get(USAGE, {"window": "week"}).json()
    assert body["executions"] == 4
    assert body["latency_s"]["p99"] == 9.0


def test_a_staff_session_sees_its_own_requests(staff_api_client, traffic):
    body = staff_api_client.get(USAGE, {"window": "day"}).json()
    assert (body["executions"], body["succeeded"]) == (2, 2)
    assert [item["signature"] for item in body["by_signature"]] == ["qa"]


def test_a_client_without_executions_reads_zeros(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {APIKeyFactory().raw_key}")
    body = client.get(USAGE).json()
    assert body["executions"] == 0 and body["by_signature"] == []
    assert body["success_rate"] is None
    assert body["latency_s"] == {"p50": None, "p95": None, "p99": None}


def test_bad_requests_answer_in_the_one_shape(api_client, db):
    body = assert_error_shape(api_client.get(USAGE, {"window": "year"}), 400)
    assert body["code"] == "invalid_request"
    assert body["errors"]["window"][0]["code"] == "invalid_choice"
    assert assert_error_shape(APIClient().get(USAGE), 401)["code"] == "not_authenticated"
    assert assert_error_shape(api_client.post(USAGE, {}), 405)["code"] == "method_not_allowed"


def test_the_admin_page_lists_every_client(admin_client, traffic):
    page = admin_client.get(reverse("admin:monitoring_usage"), {"window": "day"})
    assert page.status_code == 200
    html = page.content.decode()
    rows = {name: html.index(name) for name in ("other-client (", ">client (", "user staff")}
    # Busiest first: the other key (5), this key (3 in the day), the staff user (2).
    assert rows["other-client ("] < rows[">client ("] < rows["user staff"]
    assert "66.7%" in html  # this key's success rate
    assert "<strong>Last day</strong>" in html


def test_the_admin_page_needs_the_permission_to_view_executions(client, make_user, traffic):
    client.force_login(make_user("viewer", is_staff=True))
    assert client.get(reverse("admin:monitoring_usage")).status_code == 403
    client.force_login(make_user("reader", is_staff=True, perms=("executions.view_execution",)))
    assert client.get(reverse("admin:monitoring_usage")).status_code == 200
    # Not staff: the admin's login page.
    client.force_login(make_user("outsider", perms=("executions.view_execution",)))
    assert client.get(reverse("admin:monitoring_usage")).status_code == 302
