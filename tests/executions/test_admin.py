"""The operations console: read-only records, breaker state and actions."""

import pytest
from django.contrib import admin
from django.urls import reverse

from executions.models import Execution, ExecutionAttempt
from executions.services.create import execution_create
from providers import breakers
from providers.models import BreakerEvent, CircuitBreaker
from tests.support.factories import CLOSED_PORT_URL, ProviderFactory, StaffUserFactory


@pytest.fixture
def records(qa_version, echo_provider, broken_provider, django_capture_on_commit_callbacks):
    ProviderFactory(
        name="front", kind="openai", base_url=CLOSED_PORT_URL, fallbacks=(echo_provider,)
    )
    with django_capture_on_commit_callbacks(execute=True):
        execution = execution_create(
            signature="qa", inputs={"question": "q", "level": 1}, provider="front"
        ).execution
    breakers.breaker_force_open(provider=broken_provider)
    return execution


@pytest.mark.django_db
@pytest.mark.parametrize("model", [Execution, ExecutionAttempt, CircuitBreaker, BreakerEvent])
def test_pages_load_and_records_cannot_be_added(admin_client, records, model):
    opts = model._meta
    changelist = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert changelist.status_code == 200
    add = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
    assert add.status_code == 403
    instance = model.objects.first()
    change = admin_client.get(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[instance.pk])
    )
    assert change.status_code == 200


@pytest.mark.django_db
def test_execution_records_are_read_only(admin_client, records):
    url = reverse("admin:executions_execution_change", args=[records.pk])
    page = admin_client.get(url)
    assert b'name="status"' not in page.content
    admin_client.post(url, {"status": "queued"})
    records.refresh_from_db()
    assert records.status == "succeeded"
    delete = admin_client.get(reverse("admin:executions_execution_delete", args=[records.pk]))
    assert delete.status_code == 403


@pytest.mark.django_db
def test_breaker_actions_call_the_services(admin_client, records, broken_provider):
    breaker = CircuitBreaker.objects.get(provider=broken_provider)
    changelist = reverse("admin:providers_circuitbreaker_changelist")
    admin_client.post(changelist, {"action": "reset", "_selected_action": [breaker.pk]})
    breaker.refresh_from_db()
    assert (breaker.state, breaker.forced) == ("closed", False)
    assert breaker.events.order_by("-at", "-id").first().reason == "reset by admin"
    admin_client.post(changelist, {"action": "force_open", "_selected_action": [breaker.pk]})
    breaker.refresh_from_db()
    assert (breaker.state, breaker.forced) == ("open", True)


@pytest.mark.django_db
def test_saving_a_breaker_changes_only_its_configuration(admin_client, records, broken_provider):
    breaker = CircuitBreaker.objects.get(provider=broken_provider)
    url = reverse("admin:providers_circuitbreaker_change", args=[breaker.pk])
    page = admin_client.get(url)
    assert b"forced open by an operator" in page.content
    form = {
        "failure_rate_threshold": 25,
        "slow_call_rate_threshold": 100,
        "slow_call_duration_s": 10,
        "sliding_window_size": 8,
        "minimum_calls": 4,
        "open_duration_s": 15,
        "half_open_permitted_calls": 2,
        "half_open_max_wait_s": 60,
    }
    # Meanwhile a worker resets the breaker: the admin's save must not undo it.
    breakers.breaker_reset(provider=broken_provider)
    response = admin_client.post(url, form)
    assert response.status_code == 302
    breaker.refresh_from_db()
    assert (breaker.state, breaker.sliding_window_size, breaker.failure_rate_threshold) == (
        "closed",
        8,
        25,
    )


@pytest.mark.django_db
def test_a_breaker_cannot_be_set_to_fewer_trial_calls_than_are_out(admin_client, echo_provider):
    breaker = breakers.breaker_get_or_create(provider=echo_provider)
    CircuitBreaker.objects.filter(pk=breaker.pk).update(
        state="half_open", half_open_permits_issued=3
    )
    form = {
        "failure_rate_threshold": 50,
        "slow_call_rate_threshold": 100,
        "slow_call_duration_s": 60,
        "sliding_window_size": 20,
        "minimum_calls": 10,
        "open_duration_s": 30,
        "half_open_permitted_calls": 1,
        "half_open_max_wait_s": 300,
    }
    url = reverse("admin:providers_circuitbreaker_change", args=[breaker.pk])
    response = admin_client.post(url, form)
    assert response.status_code == 200
    assert "3 trial calls are already admitted" in response.content.decode()
    breaker.refresh_from_db()
    assert (breaker.half_open_permitted_calls, breaker.half_open_permits_issued) == (3, 3)


@pytest.mark.django_db
def test_cancel_action(admin_client, qa_version, echo_provider, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        queued = execution_create(signature="qa", inputs={"question": "q", "level": 1}).execution
    changelist = reverse("admin:executions_execution_changelist")
    admin_client.post(changelist, {"action": "cancel_queued", "_selected_action": [queued.pk]})
    queued.refresh_from_db()
    assert queued.status == "cancelled"


@pytest.mark.django_db
def test_cancel_action_needs_the_change_permission(records, client):
    client.force_login(StaffUserFactory(username="viewer", perms=("executions.view_execution",)))
    changelist = client.get(reverse("admin:executions_execution_changelist"))
    assert changelist.status_code == 200
    assert "cancel_queued" not in changelist.content.decode()


@pytest.mark.django_db
def test_execution_page_groups_every_field(admin_client, records):
    model_fields = {field.name for field in Execution._meta.fields}
    admin_class = admin.site._registry[Execution]
    shown = {name for _, options in admin_class.fieldsets for name in options["fields"]}
    # execution_time_s is shown formatted, as execution_time.
    assert model_fields - shown == {"execution_time_s"}
    Execution.objects.filter(pk=records.pk).update(execution_time_s=1.23456789)
    page = admin_client.get(reverse("admin:executions_execution_change", args=[records.pk]))
    content = page.content.decode()
    for heading in ("Result", "Request", "Timings and metrics", "Worker"):
        assert f">{heading}</h2>" in content
    assert "1.235 s" in content
    assert "td.original p { display: none; }" in content  # no caption repeating each attempt


@pytest.mark.django_db
def test_execution_list_shows_short_ids(admin_client, records):
    page = admin_client.get(reverse("admin:executions_execution_changelist"))
    content = page.content.decode()
    assert f">{str(records.pk)[:8]}</a>" in content
    assert f">{records.pk}</a>" not in content


@pytest.mark.django_db
def test_breaker_page_lists_its_transitions(admin_client, records, broken_provider):
    breaker = CircuitBreaker.objects.get(provider=broken_provider)
    page = admin_client.get(reverse("admin:providers_circuitbreaker_change", args=[breaker.pk]))
    content = page.content.decode()
    assert "<th>transition</th>" in content
    assert "Closed &rarr; Open" in content
    assert "failed of" in content


@pytest.mark.django_db
def test_attempts_newest_first_and_events_name_the_provider(admin_client, records, broken_provider):
    attempts = admin_client.get(reverse("admin:executions_executionattempt_changelist"))
    listed = list(attempts.context["cl"].result_list)
    assert [a.started_at for a in listed] == sorted((a.started_at for a in listed), reverse=True)
    assert f">{str(records.pk)[:8]}<" in attempts.content.decode()
    breakers.breaker_reset(provider=broken_provider)
    events = admin_client.get(reverse("admin:providers_breakerevent_changelist")).content.decode()
    # The opening event lists the provider, not the breaker's current ("Closed") name.
    assert "breaker (Closed)" not in events and broken_provider.name in events
