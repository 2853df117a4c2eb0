"""Re-running an execution makes a new one linked to the original, never changes the original:
through the API, the admin (executions list and failure log) and the command."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from executions.management.commands.executions_rerun import Command
from executions.models import Execution, ExecutionFailure
from executions.services.create import execution_create
from providers import breakers
from providers.services import provider_update
from tests.support.factories import APIKeyFactory, ProviderFactory, SignatureVersionFactory
from tests.support.specs import QA_LEVEL_INPUTS, QA_LEVEL_SPEC


@pytest.fixture
def failed(qa_version, echo_provider, api_key, django_capture_on_commit_callbacks) -> Execution:
    """An execution of `api_key` that failed: its provider's breaker was open."""
    tripped = ProviderFactory(name="tripped")
    breakers.breaker_force_open(provider=tripped)
    with django_capture_on_commit_callbacks(execute=True):
        execution = execution_create(
            signature="qa", inputs=QA_LEVEL_INPUTS, provider="tripped", api_key=api_key
        ).execution
    execution.refresh_from_db()
    assert execution.status == "failed"
    return execution


def _snapshot(execution: Execution) -> dict:
    return Execution.objects.filter(id=execution.id).values().get()


def _rerun_url(execution: Execution) -> str:
    return f"/api/v1/executions/{execution.id}/rerun"


@pytest.mark.django_db(transaction=True)
def test_the_api_reruns_on_another_provider_as_a_new_execution(failed, api_client, api_key):
    before = _snapshot(failed)
    response = api_client.post(_rerun_url(failed), {"provider": "echo"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["rerun_of"] == str(failed.id)
    assert response["Location"] == body["url"]
    rerun = Execution.objects.get(id=body["id"])
    # Run at once by the test settings' inline tasks, once committed.
    assert (rerun.status, rerun.provider.name, rerun.mode) == ("succeeded", "echo", "async")
    assert (rerun.inputs, rerun.signature_version_id, rerun.api_key) == (
        failed.inputs,
        failed.signature_version_id,
        api_key,
    )
    assert _snapshot(failed) == before
    assert list(failed.reruns.all()) == [rerun]


@pytest.mark.django_db
def test_the_api_reruns_the_same_request_and_another_version(
    failed, api_client, django_capture_on_commit_callbacks
):
    SignatureVersionFactory(
        signature=failed.signature_version.signature,
        spec=QA_LEVEL_SPEC | {"instructions": "Answer briefly."},
    )
    with django_capture_on_commit_callbacks(execute=True):
        same = api_client.post(_rerun_url(failed), {}, format="json")
        other = api_client.post(_rerun_url(failed), {"version": 2}, format="json")
    assert (same.status_code, other.status_code) == (202, 202)
    same_row = Execution.objects.get(id=same.json()["id"])
    assert (same_row.requested_provider.name, same_row.error_cause) == ("tripped", "breaker_open")
    assert other.json()["version"] == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"provider": "nope"}, 404, "provider_not_found"),
        ({"version": 9}, 404, "version_not_found"),
        ({"version": 0}, 400, "invalid_request"),
        ({"providr": "echo"}, 400, "invalid_request"),
        ({"provider": "disabled"}, 400, "provider_disabled"),
    ],
)
def test_bad_reruns_are_refused_in_the_one_shape(failed, api_client, body, status, code):
    disabled = ProviderFactory(name="disabled")
    provider_update(provider=disabled, data={"enabled": False})
    response = api_client.post(_rerun_url(failed), body, format="json")
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert set(response.json()) == {"code", "message", "errors"}
    assert not failed.reruns.exists()


@pytest.mark.django_db
def test_another_api_key_cannot_rerun_it(failed):
    other = APIKeyFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {other.raw_key}")
    response = client.post(_rerun_url(failed), {}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert not failed.reruns.exists()


# The admin ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_reruns_selected_executions_with_the_same_settings(
    failed, admin_client, admin_user, django_capture_on_commit_callbacks
):
    url = reverse("admin:executions_execution_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url, {"action": "rerun_same", ACTION_CHECKBOX_NAME: [str(failed.id)]}, follow=True
        )
    assert response.status_code == 200
    rerun = failed.reruns.get()
    assert (rerun.requested_provider.name, rerun.created_by) == ("tripped", admin_user)
    assert "Queued 1 re-run(s)" in response.content.decode()


@pytest.mark.django_db
def test_the_failure_log_reruns_on_a_chosen_provider(
    failed, admin_client, django_capture_on_commit_callbacks
):
    url = reverse("admin:executions_executionfailure_changelist")
    failure = ExecutionFailure.objects.get(execution=failed)
    selection = {"action": "rerun_choose", ACTION_CHECKBOX_NAME: [str(failure.pk)]}
    form = admin_client.post(url, selection)
    assert form.status_code == 200
    assert "Re-run 1 execution(s)" in form.content.decode()
    assert not failed.reruns.exists()
    with django_capture_on_commit_callbacks(execute=True):
        applied = admin_client.post(
            url, selection | {"apply": "1", "provider": "echo", "version": ""}, follow=True
        )
    assert applied.status_code == 200
    rerun = failed.reruns.get()
    assert (rerun.status, rerun.provider.name) == ("succeeded", "echo")


@pytest.mark.django_db
def test_a_rerun_the_services_refuse_is_reported_not_raised(failed, admin_client):
    url = reverse("admin:executions_execution_changelist")
    response = admin_client.post(
        url,
        {
            "action": "rerun_choose",
            ACTION_CHECKBOX_NAME: [str(failed.id)],
            "apply": "1",
            "version": "staging",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "Not re-run" in response.content.decode()
    assert not failed.reruns.exists()


@pytest.mark.django_db
def test_staff_without_the_add_permission_get_no_rerun_action(failed, client, make_user):
    user = make_user("viewer", perms=("view_execution",), is_staff=True)
    client.force_login(user)
    response = client.get(reverse("admin:executions_execution_changelist"))
    assert response.status_code == 200
    assert "rerun_same" not in response.content.decode()


# The command ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_reruns_on_another_provider(failed, capsys, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("executions_rerun", str(failed.id), "--provider", "echo", "--version", "1")
    rerun = failed.reruns.get()
    assert f"{failed.id} -> {rerun.id}" in capsys.readouterr().out
    rerun.refresh_from_db()
    assert (rerun.status, rerun.provider.name) == ("succeeded", "echo")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["not-a-uuid"], "Not an execution id"),
        (["3f1c9a52-7d4e-4b8a-9c1e-2a6b5d8f0e47"], "No execution with id"),
        (["{id}", "--provider", "nope"], "provider_not_found"),
        (["{id}", "--version", "staging"], "alias_not_found"),
    ],
)
def test_the_command_refuses_bad_input(failed, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("executions_rerun", *[a.replace("{id}", str(failed.id)) for a in arguments])
    assert not failed.reruns.exists()


def test_the_command_has_help():
    parser = Command().create_parser("manage.py", "executions_rerun")
    text = parser.format_help()
    assert "--provider" in text and "--version" in text and "linked to the original" in text
