"""The execute API: modes, every validation error, idempotency, reads, cancel, batch, auth."""

import json

import pytest
from django.db import connection
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey

from executions.models import Execution
from tests.executions.conftest import EXECUTE
from tests.support.factories import CLOSED_PORT_URL, APIKeyFactory, ProviderFactory, UserFactory
from tests.support.specs import QA_LEVEL_INPUTS

BATCH = "/api/v1/dspy/execute/batch"


def _body(**overrides) -> dict:
    return {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo"} | overrides


# Tests marked `transaction=True` really commit, so the task enqueued on commit runs inline
# (the test settings run django-q2 tasks synchronously) before a sync request stops waiting.
# The others run inside a transaction that is rolled back: what they enqueue never runs, and
# `_pending_enqueues` counts it.
RUNS = pytest.mark.django_db(transaction=True)


def _pending_enqueues() -> int:
    return len(connection.run_on_commit)


@RUNS
def test_sync_returns_outputs_and_metrics(qa_version, echo_provider, api_client):
    response = api_client.post(EXECUTE, _body(), format="json")
    assert response.status_code == 200, response.data
    data = response.json()
    assert data["status"] == "succeeded"
    assert data["outputs"] == {"answer": "Paris"}
    assert (data["signature"], data["version"], data["provider"]) == ("qa", 1, "echo")
    assert data["metrics"]["input_tokens"] == 7
    assert data["metrics"]["success"] is True
    assert data["timings"]["finished_at"] is not None
    assert data["error"] is None


@pytest.mark.django_db
def test_async_returns_202_with_location(qa_version, echo_provider, api_client):
    response = api_client.post(EXECUTE, _body(mode="async"), format="json")
    assert response.status_code == 202
    execution = Execution.objects.get()
    assert response["Location"] == f"http://testserver/api/v1/executions/{execution.id}"
    assert response.json()["status"] == "queued"
    assert _pending_enqueues() == 1


@pytest.mark.django_db
def test_sync_past_its_timeout_answers_202_and_keeps_the_work(
    qa_version, echo_provider, api_client
):
    response = api_client.post(EXECUTE, _body(timeout_s=0.05), format="json")
    assert response.status_code == 202
    assert response["Location"].endswith(response.json()["id"])
    assert Execution.objects.get().status == "queued"


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    data = response.json()
    assert data["code"] == code
    assert data["message"]
    return data


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code", "field", "field_code"),
    [
        (_body(inputs={"question": "q"}), 400, "invalid_inputs", "level", "missing"),
        (
            _body(inputs={**QA_LEVEL_INPUTS, "extra": 1}),
            400,
            "invalid_inputs",
            "extra",
            "unknown_field",
        ),
        (
            _body(inputs={**QA_LEVEL_INPUTS, "level": "1"}),
            400,
            "invalid_inputs",
            "level",
            "wrong_type",
        ),
        (_body(inputs="text"), 400, "invalid_inputs", "non_field_errors", "wrong_type"),
        (_body(config={"temperature": 9}), 400, "invalid_config", "temperature", "out_of_range"),
        (_body(config={"max_tokens": 0}), 400, "invalid_config", "max_tokens", "out_of_range"),
        (_body(config={"seed": 3}), 400, "invalid_config", "seed", "unknown_field"),
        (_body(mode="later"), 400, "invalid_request", "mode", "invalid_choice"),
        (_body(timeout_s=0), 400, "invalid_request", "timeout_s", "out_of_range"),
        (_body(timeout_s=10_000), 400, "invalid_request", "timeout_s", "out_of_range"),
        (_body(version=0), 400, "invalid_request", "version", "invalid"),
        (_body(version=True), 400, "invalid_request", "version", "invalid"),
        (_body(typo=1), 400, "invalid_request", "typo", "unknown_field"),
        ({"inputs": QA_LEVEL_INPUTS}, 400, "invalid_request", "signature", "required"),
        ({"signature": "qa"}, 400, "invalid_request", "inputs", "required"),
    ],
)
def test_validation_errors(
    qa_version, echo_provider, api_client, body, status, code, field, field_code
):
    data = _error(api_client.post(EXECUTE, body, format="json"), status, code)
    assert data["errors"][field][0]["code"] == field_code
    assert data["errors"][field][0]["message"]
    assert not Execution.objects.exists()
    assert _pending_enqueues() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (_body(signature="nope"), 404, "signature_not_found"),
        (_body(version=7), 404, "version_not_found"),
        (_body(version="staging"), 404, "alias_not_found"),
        (_body(provider="nope"), 404, "provider_not_found"),
    ],
)
def test_unknown_names(qa_version, echo_provider, api_client, body, status, code):
    _error(api_client.post(EXECUTE, body, format="json"), status, code)
    assert not Execution.objects.exists()
    assert _pending_enqueues() == 0


@pytest.mark.django_db
def test_a_disabled_provider_is_a_400(qa_version, echo_provider, api_client):
    echo_provider.enabled = False
    echo_provider.save()
    _error(api_client.post(EXECUTE, _body(), format="json"), 400, "provider_disabled")


@pytest.mark.django_db
def test_malformed_json(qa_version, api_client):
    response = api_client.post(EXECUTE, "{not json", content_type="application/json")
    _error(response, 400, "parse_error")


@pytest.mark.django_db
def test_a_body_over_the_limit_is_a_413(qa_version, echo_provider, api_client, settings):
    settings.API_MAX_BODY_BYTES = 1000
    body = _body(inputs={"question": "x" * 2000, "level": 1})
    _error(api_client.post(EXECUTE, body, format="json"), 413, "payload_too_large")
    assert not Execution.objects.exists()


@RUNS
def test_idempotent_retries(qa_version, echo_provider, api_client):
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-42"}
    first = api_client.post(EXECUTE, _body(), format="json", **headers)
    again = api_client.post(EXECUTE, _body(), format="json", **headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Execution.objects.count() == 1
    assert Execution.objects.get().attempts == 1
    changed = api_client.post(
        EXECUTE, _body(inputs={**QA_LEVEL_INPUTS, "level": 2}), format="json", **headers
    )
    _error(changed, 409, "idempotency_key_reused")
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_an_overlong_idempotency_key_is_refused(qa_version, echo_provider, api_client):
    response = api_client.post(EXECUTE, _body(), format="json", HTTP_IDEMPOTENCY_KEY="k" * 201)
    data = _error(response, 400, "invalid_request")
    assert data["errors"]["Idempotency-Key"][0]["code"] == "invalid_idempotency_key"


@RUNS
def test_detail_shows_attempts_and_list_filters(
    qa_version, echo_provider, broken_provider, api_client
):
    ProviderFactory(
        name="front", kind="openai", base_url=CLOSED_PORT_URL, fallbacks=(echo_provider,)
    )
    answered = api_client.post(EXECUTE, _body(provider="front"), format="json").json()
    api_client.post(EXECUTE, _body(provider="broken"), format="json")

    detail = api_client.get(f"/api/v1/executions/{answered['id']}").json()
    assert (detail["requested_provider"], detail["provider"]) == ("front", "echo")
    assert [(a["provider"], a["outcome"]) for a in detail["provider_attempts"]] == [
        ("front", "failed"),
        ("echo", "succeeded"),
    ]

    def listed(**query) -> list[dict]:
        return api_client.get("/api/v1/executions", query).json()["results"]

    failed = listed(status="failed")
    assert len(failed) == 1
    assert failed[0]["error"]["code"] == "providers_exhausted"
    assert [item["id"] for item in listed(provider="echo")] == [answered["id"]]
    assert listed(signature="other") == []
    assert len(listed(queued_after=detail["timings"]["queued_at"])) >= 1
    # Pages by cursor: one execution a page, the second reached by `next`.
    page = api_client.get("/api/v1/executions", {"page_size": 1}).json()
    assert len(page["results"]) == 1 and "count" not in page
    second = api_client.get(page["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    assert {page["results"][0]["id"], second["results"][0]["id"]} == {
        answered["id"],
        failed[0]["id"],
    }


@pytest.mark.django_db
def test_unknown_and_malformed_execution_ids(api_client):
    _error(
        api_client.get("/api/v1/executions/00000000-0000-0000-0000-000000000000"), 404, "not_found"
    )
    _error(api_client.get("/api/v1/executions/not-a-uuid"), 404, "not_found")
    _error(api_client.post("/api/v1/executions/not-a-uuid/cancel"), 404, "not_found")


@pytest.mark.django_db
def test_an_api_key_sees_only_its_own_executions(qa_version, echo_provider, api_client):
    created = api_client.post(EXECUTE, _body(mode="async"), format="json").json()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {APIKeyFactory(name='other').raw_key}")
    assert other.get("/api/v1/executions").json()["results"] == []
    _error(other.get(f"/api/v1/executions/{created['id']}"), 404, "not_found")


@pytest.mark.django_db
def test_cancel(qa_version, echo_provider, api_client):
    created = api_client.post(EXECUTE, _body(mode="async"), format="json").json()
    response = api_client.post(f"/api/v1/executions/{created['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    _error(api_client.post(f"/api/v1/executions/{created['id']}/cancel"), 409, "not_cancellable")


@RUNS
def test_batch_validates_each_item_on_its_own(qa_version, echo_provider, api_client):
    body = {
        "items": [
            _body(),
            _body(inputs={"question": "q"}),
            _body(signature="nope"),
            "not an object",
            _body(inputs={**QA_LEVEL_INPUTS, "level": 2}),
        ]
    }
    response = api_client.post(BATCH, body, format="json")
    assert response.status_code == 200, response.content
    items = response.json()["items"]
    assert [item["index"] for item in items] == [0, 1, 2, 3, 4]
    assert items[0]["execution"]["outputs"] == {"answer": "Paris"}
    assert items[1]["error"]["code"] == "invalid_inputs"
    assert items[2]["error"]["code"] == "signature_not_found"
    assert items[2]["status"] == 404
    assert items[3]["error"]["code"] == "invalid_request"
    assert items[4]["execution"]["status"] == "succeeded"
    executions = Execution.objects.all()
    assert executions.count() == 2
    assert {str(execution.batch_id) for execution in executions} == {response.json()["batch_id"]}


@pytest.mark.django_db
def test_batch_limits(qa_version, echo_provider, api_client, settings):
    settings.EXECUTIONS_BATCH_MAX_ITEMS = 2
    data = _error(
        api_client.post(BATCH, {"items": [_body()] * 3}, format="json"), 400, "invalid_request"
    )
    assert data["errors"]["items"][0]["code"] == "too_many_items"
    data = _error(api_client.post(BATCH, {"items": []}, format="json"), 400, "invalid_request")
    assert data["errors"]["items"][0]["code"] == "empty"
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_async_batch_answers_202(qa_version, echo_provider, api_client):
    response = api_client.post(BATCH, {"items": [_body(), _body()], "mode": "async"}, format="json")
    assert response.status_code == 202
    assert _pending_enqueues() == 2


@RUNS
def test_batch_idempotency(qa_version, echo_provider, api_client):
    body = {"items": [_body(), _body()]}
    first = api_client.post(BATCH, body, format="json", HTTP_IDEMPOTENCY_KEY="b-1").json()
    again = api_client.post(BATCH, body, format="json", HTTP_IDEMPOTENCY_KEY="b-1").json()
    ids = [item["execution"]["id"] for item in first["items"]]
    assert [item["execution"]["id"] for item in again["items"]] == ids
    assert again["batch_id"] == first["batch_id"]
    assert Execution.objects.count() == 2


# Authentication and rate limits ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", EXECUTE),
        ("post", BATCH),
        ("get", "/api/v1/executions"),
        ("get", "/api/v1/executions/00000000-0000-0000-0000-000000000000"),
        ("post", "/api/v1/executions/00000000-0000-0000-0000-000000000000/cancel"),
    ],
)
def test_every_endpoint_needs_credentials(method, path):
    response = getattr(APIClient(), method)(path, {}, format="json")
    data = _error(response, 401, "not_authenticated")
    assert data["message"]
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.django_db
def test_health_and_schema_need_none():
    anonymous = APIClient()
    assert anonymous.get("/health/live").status_code == 200
    assert anonymous.get("/api/schema/").status_code == 200


@pytest.mark.django_db
def test_a_revoked_or_wrong_key_is_refused(api_key):
    key = api_key.raw_key
    anonymous = APIClient()
    anonymous.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}x")
    _error(anonymous.get("/api/v1/executions"), 401, "authentication_failed")
    api_key.revoked = True
    api_key.save()
    anonymous.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    _error(anonymous.get("/api/v1/executions"), 401, "authentication_failed")


@pytest.mark.django_db
def test_only_a_hash_of_the_key_is_stored(api_key):
    key = api_key.raw_key
    stored = APIKey.objects.filter(pk=api_key.pk).values().get()
    assert key not in json.dumps(stored, default=str)
    assert key.split(".")[1] not in json.dumps(stored, default=str)


@pytest.mark.django_db
def test_staff_sessions_work_and_other_sessions_do_not(qa_version, echo_provider, staff_api_client):
    assert staff_api_client.get("/api/v1/executions").status_code == 200
    # Session authentication enforces CSRF on writes.
    _error(staff_api_client.post(EXECUTE, _body(), format="json"), 403, "permission_denied")
    plain = APIClient()
    plain.force_login(UserFactory(username="plain"))
    _error(plain.get("/api/v1/executions"), 401, "not_authenticated")


@pytest.mark.django_db
def test_a_staff_users_idempotency_keys_are_their_own(qa_version, echo_provider, staff_user):
    staff = APIClient()
    staff.force_authenticate(staff_user)
    body = _body(mode="async")
    first = staff.post(EXECUTE, body, format="json", HTTP_IDEMPOTENCY_KEY="s-1").json()
    again = staff.post(EXECUTE, body, format="json", HTTP_IDEMPOTENCY_KEY="s-1").json()
    assert again["id"] == first["id"]
    assert Execution.objects.get().created_by == staff_user


@pytest.mark.django_db
def test_rate_limits_are_per_key_with_retry_after(api_client, settings):
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": {"api_key": "3/min", "user": "3/min"}
    }
    for _ in range(3):
        assert api_client.get("/api/v1/executions").status_code == 200
    response = api_client.get("/api/v1/executions")
    _error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0
    # Another key has its own budget.
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {APIKeyFactory(name='other').raw_key}")
    assert other.get("/api/v1/executions").status_code == 200


@pytest.mark.django_db
def test_the_schema_describes_the_executions_api(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    for path in (
        "/api/v1/dspy/execute",
        "/api/v1/dspy/execute/batch",
        "/api/v1/executions",
        "/api/v1/executions/{id}",
        "/api/v1/executions/{id}/cancel",
    ):
        assert path in paths
    assert "ApiKeyAuth" in schema["components"]["securitySchemes"]


@pytest.mark.django_db
def test_invalid_filters_are_a_400(api_client):
    data = _error(api_client.get("/api/v1/executions", {"status": "bogus"}), 400, "invalid_request")
    assert data["errors"]["status"][0]["code"] == "invalid_choice"
    data = _error(
        api_client.get("/api/v1/executions", {"queued_after": "yesterday"}), 400, "invalid_request"
    )
    assert data["errors"]["queued_after"][0]["code"] == "invalid"
