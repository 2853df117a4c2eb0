"""The buttons on a provider's admin page: force the breaker open, reset it, run the check."""

import pytest
from django.contrib.messages import get_messages
from django.contrib.sessions.models import Session
from django.test import Client

from providers.models import BreakerEvent, CircuitBreaker
from tests.support.engines import BROKEN_ENGINE, LEAKY_ENGINE
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db

SECRET = "sk-check-secret-value-321"


def action_url(provider, action: str) -> str:
    return f"/admin/providers/provider/{provider.pk}/{action}/"


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_force_open_then_reset_changes_the_breaker_and_records_events(operator_client):
    provider = ProviderFactory(name="remote")
    page = f"/admin/providers/provider/{provider.pk}/change/"
    response = operator_client.post(action_url(provider, "breaker-force-open"))
    assert (response.status_code, response["Location"]) == (302, page)
    assert messages_of(response) == [
        "The breaker of remote is forced open: no calls until it is reset."
    ]
    breaker = CircuitBreaker.objects.get(provider=provider)
    assert (breaker.state, breaker.forced) == ("open", True)
    assert "open (forced), stays open until reset" in operator_client.get(page).content.decode()
    response = operator_client.post(action_url(provider, "breaker-reset"))
    assert response.status_code == 302
    breaker.refresh_from_db()
    assert (breaker.state, breaker.forced) == ("closed", False)
    assert list(BreakerEvent.objects.values_list("from_state", "to_state", "reason")) == [
        ("open", "closed", "reset by operator"),
        ("closed", "open", "forced open by operator"),
    ]


def test_the_check_reports_the_answer_or_the_failure(operator_client):
    answering = ProviderFactory(name="answering")
    response = operator_client.post(action_url(answering, "check"))
    [message] = messages_of(response)
    assert message.startswith("Check of answering: answered 'Paris' (tokens: 7 in, 1 out;")
    broken = ProviderFactory(name="broken", engine_path=BROKEN_ENGINE)
    # The first message was never shown (no page was rendered in between).
    message = messages_of(operator_client.post(action_url(broken, "check")))[-1]
    assert message.startswith("Check of broken failed: LMServerError")
    assert "the backend is down" in message
    # An operator's probe is not traffic: the breaker heard nothing of it.
    assert not CircuitBreaker.objects.exists()


def test_the_buttons_need_a_post_with_the_csrf_token(operator):
    provider = ProviderFactory(name="remote")
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.get(action_url(provider, "breaker-force-open")).status_code == 405
    assert client.post(action_url(provider, "breaker-force-open")).status_code == 403
    page = client.get(f"/admin/providers/provider/{provider.pk}/change/")
    token = page.cookies["csrftoken"].value
    response = client.post(
        action_url(provider, "breaker-force-open"), {"csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert CircuitBreaker.objects.get(provider=provider).forced


def test_the_buttons_need_the_change_permission(client, viewer, make_user):
    provider = ProviderFactory(name="remote")
    reader = make_user("reader", perms=("providers.view_provider",), is_staff=True)
    client.force_login(reader)
    page = client.get(f"/admin/providers/provider/{provider.pk}/change/").content.decode()
    assert "breaker-force-open" not in page
    for action in ("breaker-force-open", "breaker-reset", "check"):
        assert client.post(action_url(provider, action)).status_code == 403
    client.force_login(viewer)
    assert client.post(action_url(provider, "breaker-reset")).status_code == 403
    assert not BreakerEvent.objects.exists()


def test_an_unknown_provider_goes_back_to_the_list(operator_client):
    response = operator_client.post("/admin/providers/provider/999999/breaker-reset/")
    assert (response.status_code, response["Location"]) == (302, "/admin/")
    assert not CircuitBreaker.objects.exists()


def test_the_check_never_shows_the_provider_key(operator_client, monkeypatch):
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_CHECK_TEST", SECRET)
    # Its failures quote its key.
    leaky = ProviderFactory(
        name="leaky", engine_path=LEAKY_ENGINE, api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_CHECK_TEST"
    )
    response = operator_client.post(action_url(leaky, "check"), follow=True)
    text = response.content.decode()
    assert "Check of leaky failed: LMServerError" in text
    assert SECRET not in text
    # Messages wait for the next page in the session, a database row.
    assert not any(SECRET in session.session_data for session in Session.objects.all())
