"""The admin's "Try it" pages: a saved version runs as a recorded execution, a draft unsaved."""

import json

import pytest
from django.urls import reverse

from executions.forms import INPUT_FORM_FIELDS
from executions.models import Execution
from providers import breakers
from registry.field_types import FieldType
from registry.models import SignatureVersion
from tests.support.factories import (
    ProviderFactory,
    SignatureVersionFactory,
    StaffUserFactory,
)
from tests.support.specs import QA_LEVEL_SPEC

# The inline (Q_SYNC) task runs on commit: these tests commit.
RUNS = pytest.mark.django_db(transaction=True)
EDITOR_PERMS = (
    "registry.change_signature",
    "registry.add_signatureversion",
    "registry.view_signatureversion",
)


@pytest.fixture
def editor(client, db):
    user = StaffUserFactory(perms=EDITOR_PERMS)
    client.force_login(user)
    return user


def _try_url(version) -> str:
    return reverse("executions_try_version", args=[version.pk])


def _run_data(**values) -> dict:
    return {
        "inputs-question": "What is the capital of France?",
        "inputs-level": "1",
        "run-provider": "echo",
        "run-temperature": "",
        "run-max_tokens": "",
    } | values


def test_every_field_type_has_a_form_field():
    assert set(INPUT_FORM_FIELDS) == set(FieldType.values)


@pytest.mark.django_db
def test_the_page_lists_the_inputs_by_type_and_the_enabled_providers(
    client, editor, qa_version, echo_provider
):
    ProviderFactory(name="switched-off", enabled=False)
    page = client.get(_try_url(qa_version))
    assert page.status_code == 200
    form = page.context["inputs_form"]
    assert list(form.fields) == ["question", "level"]
    assert type(form.fields["level"]).__name__ == "IntegerField"
    assert [name for name, _ in page.context["run_form"].fields["provider"].choices] == ["echo"]
    version_page = client.get(
        reverse("admin:registry_signatureversion_change", args=[qa_version.pk])
    )
    assert _try_url(qa_version).encode() in version_page.content


@RUNS
def test_a_run_is_a_recorded_execution_showing_outputs_time_and_tokens(
    client, editor, qa_version, echo_provider
):
    response = client.post(_try_url(qa_version), _run_data(**{"run-max_tokens": "32"}))
    assert response.status_code == 302
    execution = Execution.objects.get()
    assert response["Location"] == f"{_try_url(qa_version)}?execution={execution.pk}"
    assert (execution.status, execution.created_by, execution.signature_version) == (
        "succeeded",
        editor,
        qa_version,
    )
    assert execution.inputs == {"question": "What is the capital of France?", "level": 1}
    assert execution.config["max_tokens"] == 32
    page = client.get(response["Location"])
    assert page.context["execution"] == execution
    assert json.loads(page.context["outputs"]) == {"answer": "Paris"}
    content = page.content.decode()
    assert "Paris" in content
    assert "Succeeded" in content
    assert f"{execution.input_tokens} / {execution.output_tokens}" in content
    # Unlike an API execution, a Try-it run keeps the prompt and the raw output of its success.
    attempt = execution.provider_attempts.get()
    assert "What is the capital of France?" in attempt.prompt
    assert attempt.raw_output.strip() == "Paris"
    assert 'class="try-it-prompt"' in content
    assert "(not recorded)" not in content
    # The form comes back filled with what ran.
    assert page.context["inputs_form"].initial == execution.inputs


@RUNS
def test_someone_elses_execution_is_not_shown(client, editor, qa_version, echo_provider):
    other = StaffUserFactory(perms=EDITOR_PERMS)
    client.force_login(other)
    location = client.post(_try_url(qa_version), _run_data())["Location"]
    client.force_login(editor)
    assert client.get(location).context["execution"] is None
    assert client.get(f"{_try_url(qa_version)}?execution=not-a-uuid").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"inputs-level": "three"}, "level"),
        ({"inputs-level": ""}, "level"),
        ({"run-provider": "nope"}, "provider"),
        ({"run-temperature": "9"}, "temperature"),
        ({"run-max_tokens": "999999"}, "max_tokens"),
    ],
)
def test_bad_input_is_a_form_error_and_runs_nothing(
    client, editor, qa_version, echo_provider, values, field
):
    page = client.post(_try_url(qa_version), _run_data(**values))
    assert page.status_code == 200
    form = page.context["inputs_form"] if field in ("level",) else page.context["run_form"]
    assert form.errors[field]
    assert b"nothing was run" in page.content
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_the_services_refusal_lands_on_the_form(client, editor, echo_provider, settings):
    # max_tokens of the version's lm_defaults above the server's limit: the form accepts the
    # request, `execution_create` refuses it, and the page says why.
    settings.EXECUTIONS_MAX_TOKENS_LIMIT = 8
    version = SignatureVersionFactory(spec=QA_LEVEL_SPEC | {"lm_defaults": {"max_tokens": 64}})
    page = client.post(_try_url(version), _run_data())
    assert page.status_code == 200
    assert "above this server's limit of 8" in page.context["run_form"].errors["max_tokens"][0]
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_only_editors_may_try(client, qa_version, echo_provider):
    url = _try_url(qa_version)
    assert client.get(url).status_code == 302  # to the admin login
    client.force_login(StaffUserFactory(perms=("registry.view_signature",)))
    assert client.get(url).status_code == 403
    assert client.post(url, _run_data()).status_code == 403
    draft = reverse("executions_try_draft", args=[qa_version.signature_id])
    assert client.post(draft, {}).status_code == 403
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_the_run_form_needs_the_csrf_token(qa_version, echo_provider):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(StaffUserFactory(perms=EDITOR_PERMS))
    assert client.post(_try_url(qa_version), _run_data()).status_code == 403


# Drafts


def _draft_form_data(**values) -> dict:
    """What the registry's draft form posts: the draft and its field rows."""
    rows = [
        ("input", "question", "str"),
        ("input", "level", "int"),
        ("output", "answer", "str"),
    ]
    data = {
        "module_kind": "Predict",
        "instructions": "Answer the question, briefly.",
        "temperature": "",
        "max_tokens": "",
        "compiled_state": "",
        "changelog": "",
        "fields-TOTAL_FORMS": str(len(rows)),
        "fields-INITIAL_FORMS": "0",
        "fields-MIN_NUM_FORMS": "0",
        "fields-MAX_NUM_FORMS": "1000",
    }
    for index, (role, name, kind) in enumerate(rows):
        data |= {
            f"fields-{index}-role": role,
            f"fields-{index}-name": name,
            f"fields-{index}-type": kind,
            f"fields-{index}-description": "",
            f"fields-{index}-prefix": "",
            f"fields-{index}-choices": "",
        }
    return data | values


@pytest.mark.django_db
def test_a_draft_runs_unsaved_on_a_custom_provider(client, editor, qa_version, echo_provider):
    url = reverse("executions_try_draft", args=[qa_version.signature_id])
    new_version = reverse("admin:registry_signature_new_version", args=[qa_version.signature_id])
    assert url.encode() in client.get(new_version).content
    first = client.post(url, _draft_form_data())
    assert first.status_code == 200
    assert first.context["call"] is None
    spec_json = first.context["spec_json"]
    assert json.loads(spec_json)["instructions"] == "Answer the question, briefly."
    page = client.post(url, {"draft_spec": spec_json, **_run_data(), "run": "Run"})
    call = page.context["call"]
    assert call.succeeded and call.result.outputs == {"answer": "Paris"}
    assert json.loads(page.context["outputs"]) == {"answer": "Paris"}
    assert b"Paris" in page.content
    assert SignatureVersion.objects.count() == 1
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_a_bad_draft_shows_its_problems(client, editor, qa_version, echo_provider):
    url = reverse("executions_try_draft", args=[qa_version.signature_id])
    page = client.post(url, _draft_form_data(**{"fields-1-name": "question"}))
    assert page.status_code == 200
    assert page.context["spec_errors"]
    assert b"cannot run" in page.content
    tampered = client.post(url, {"draft_spec": "{not json", **_run_data(), "run": "Run"})
    assert tampered.context["spec_errors"] == ["The draft is not valid JSON."]
    bad_input = client.post(
        url,
        {
            "draft_spec": json.dumps(QA_LEVEL_SPEC),
            **_run_data(**{"inputs-level": "x"}),
            "run": "Run",
        },
    )
    assert bad_input.context["call"] is None
    assert bad_input.context["inputs_form"].errors["level"]


@pytest.mark.django_db
def test_a_draft_on_a_local_model_explains_why_it_cannot_run(
    client, editor, qa_version, tiny_model_dir
):
    ProviderFactory(name="local", kind="mlx", model=str(tiny_model_dir))
    url = reverse("executions_try_draft", args=[qa_version.signature_id])
    data = {"draft_spec": json.dumps(QA_LEVEL_SPEC), **_run_data(), "run": "Run"}
    page = client.post(url, data | {"run-provider": "local"})
    assert page.context["call"] is None
    assert "runs only in the inference workers" in page.context["run_form"].errors["provider"][0]


@pytest.mark.django_db
def test_a_draft_on_an_open_breaker_is_refused(client, editor, qa_version, echo_provider):
    breakers.breaker_force_open(provider=echo_provider)
    url = reverse("executions_try_draft", args=[qa_version.signature_id])
    data = {"draft_spec": json.dumps(QA_LEVEL_SPEC), **_run_data(), "run": "Run"}
    call = client.post(url, data).context["call"]
    assert call.refused
