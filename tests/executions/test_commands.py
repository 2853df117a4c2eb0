"""Management commands of the executions app."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_q.models import Schedule
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey

from providers.models import CircuitBreaker
from tests.support.factories import ProviderFactory


def _call(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_create_api_key_prints_a_working_key_once():
    output = _call("executions_create_api_key", "billing service")
    key = output.strip().splitlines()[2]
    api_key = APIKey.objects.get(name="billing service")
    assert key.startswith(f"{api_key.prefix}.")
    assert key not in api_key.hashed_key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert client.get("/api/v1/executions").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["", "   ", "x" * 51])
def test_create_api_key_needs_a_reasonable_name(name):
    with pytest.raises(CommandError):
        call_command("executions_create_api_key", name)
    assert not APIKey.objects.exists()


@pytest.mark.django_db
def test_install_schedules_is_idempotent(settings):
    settings.EXECUTIONS_REAPER_EVERY_MINUTES = 2
    assert "installed" in _call("executions_install_schedules")
    assert "up to date" in _call("executions_install_schedules")
    schedule = Schedule.objects.get(func="executions.tasks.execution_reap_stale")
    assert (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
        "executions.tasks.execution_reap_stale",
        Schedule.MINUTES,
        2,
        -1,
    )


@pytest.mark.django_db
def test_breaker_command_shows_forces_open_and_resets():
    provider = ProviderFactory(name="remote", kind="openai")
    assert "remote: closed" in _call("providers_breaker", "remote")
    assert "remote: open (forced)" in _call(
        "providers_breaker", "remote", "--force-open", "--reason", "maintenance"
    )
    breaker = CircuitBreaker.objects.get(provider=provider)
    assert (breaker.state, breaker.forced) == ("open", True)
    output = _call("providers_breaker", "remote", "--reset")
    assert "remote: closed" in output
    assert "closed -> open: maintenance" in output
    assert "open -> closed: reset from the command line" in output
    assert "remote: closed" in _call("providers_breaker", "remote", "--show")


@pytest.mark.django_db
def test_breaker_command_refuses_unknown_providers_and_two_actions():
    ProviderFactory(name="remote", kind="openai")
    with pytest.raises(CommandError, match="No provider named 'nope'"):
        call_command("providers_breaker", "nope")
    with pytest.raises(CommandError):
        call_command("providers_breaker", "remote", "--reset", "--force-open")
