"""The evaluations API: create, list, read, results, cancel, compare; permissions and errors."""

import pytest
from rest_framework.test import APIClient

from evaluations.models import EvaluationRun, RunStatus
from evaluations.services.evaluate import evaluation_from_outcomes, evaluation_score_inline
from tests.evaluations.test_evaluate_service import _outcomes_of
from tests.support.factories import ProviderFactory, StaffUserFactory

EVALUATIONS = "/api/v1/evaluations/"
BODY = {
    "signature": "qa",
    "version": 1,
    "dataset": "quiz",
    "split": "dev",
    "provider": "scripted",
    "metric": "exact_match",
}


def _client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def editor_client(db) -> APIClient:
    """A staff session allowed to read, create and cancel evaluation runs."""
    return _client(
        StaffUserFactory(
            username="editor",
            perms=("view_evaluationrun", "add_evaluationrun", "change_evaluationrun"),
        )
    )


@pytest.fixture
def reader_client(db) -> APIClient:
    return _client(StaffUserFactory(username="reader", perms=("view_evaluationrun",)))


@pytest.fixture
def finished_run(make_evaluation):
    return evaluation_score_inline(run=make_evaluation())


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    assert set(body) == {"code", "message", "errors"}
    return body


# Creating -----------------------------------------------------------------------------------


def test_creating_a_run_answers_202_and_the_worker_runs_it(
    editor_client, quiz_dataset, scripted_provider, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = editor_client.post(EVALUATIONS, BODY, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["signature"], body["version"]) == ("queued", "qa", 1)
    assert body["dataset_hash"] == quiz_dataset.content_hash
    assert body["progress"] == {
        "done": 0,
        "total": 5,
        "errors": 0,
        "percent": 0.0,
        "elapsed_s": None,
        "eta_s": None,
    }
    assert body["created_by"] == "editor"
    assert response["Location"] == f"{EVALUATIONS}{body['id']}/"
    # The test settings run tasks synchronously: by now it has finished.
    detail = editor_client.get(response["Location"]).json()
    assert detail["status"] == "succeeded"
    assert detail["score"] == pytest.approx(0.6)
    assert detail["ci_low"] < 0.6 < detail["ci_high"]
    assert detail["progress"]["done"] == 5 and detail["progress"]["percent"] == 100.0


def test_the_version_may_be_an_alias_or_omitted(editor_client, quiz_dataset, scripted_provider):
    for version in ("latest", None, "1"):
        body = BODY | {"version": version}
        response = editor_client.post(EVALUATIONS, body, format="json")
        assert response.status_code == 202, response.content
        assert response.json()["version"] == 1
    body = {key: value for key, value in BODY.items() if key not in ("version", "split")}
    response = editor_client.post(EVALUATIONS, body, format="json")
    assert response.status_code == 202
    assert response.json()["split"] == "dev"


@pytest.mark.parametrize(
    ("change", "status", "code", "field"),
    [
        ({"signature": "nope"}, 404, "signature_not_found", None),
        ({"version": 7}, 404, "version_not_found", None),
        ({"version": "99999999999999999999"}, 404, "version_not_found", None),
        ({"version": "canary"}, 404, "alias_not_found", None),
        ({"dataset": "nope"}, 404, "dataset_not_found", None),
        ({"provider": "nope"}, 404, "provider_not_found", None),
        ({"split": "holdout"}, 400, "invalid_request", "split"),
        ({"split": "train"}, 400, "invalid_evaluation", "split"),
        ({"metric": "nope"}, 400, "invalid_metric", "metric"),
        ({"metric": "exact_match", "metric_params": {"threshold": 2}}, 400, "invalid_metric", None),
        ({"metric_params": [1]}, 400, "invalid_evaluation", "metric_params"),
        ({"signature": None}, 400, "invalid_request", "signature"),
        ({"signature": "qa\x00"}, 400, "invalid_request", "signature"),
        ({"dataset": "quiz\x00"}, 400, "invalid_request", "dataset"),
        ({"version": True}, 400, "invalid_request", "version"),
    ],
)
def test_every_bad_request_gets_the_one_error_shape(
    editor_client, make_dataset, scripted_provider, change, status, code, field
):
    make_dataset("quiz", rows=[("dev", "Q?", "A", [])])
    response = editor_client.post(EVALUATIONS, BODY | change, format="json")
    body = _error(response, status, code)
    if field:
        assert field in body["errors"], body
    assert not EvaluationRun.objects.exists()


def test_a_missing_body_field_and_a_disabled_provider(editor_client, quiz_dataset):
    ProviderFactory(name="off", enabled=False)
    body = _error(editor_client.post(EVALUATIONS, {}, format="json"), 400, "invalid_request")
    assert {"signature", "dataset", "provider", "metric"} <= set(body["errors"])
    _error(
        editor_client.post(EVALUATIONS, BODY | {"provider": "off"}, format="json"),
        400,
        "provider_disabled",
    )
    _error(editor_client.post(EVALUATIONS, [BODY], format="json"), 400, "invalid_request")


def test_a_dataset_of_another_signature_is_not_found(editor_client, make_dataset, qa_version):
    from tests.support.factories import SignatureVersionFactory

    other = SignatureVersionFactory(signature__name="other")
    make_dataset("theirs", version=other)
    ProviderFactory(name="scripted")
    _error(
        editor_client.post(EVALUATIONS, BODY | {"dataset": "theirs"}, format="json"),
        404,
        "dataset_not_found",
    )


def test_only_users_with_the_add_permission_create_runs(
    api_client, reader_client, client, quiz_dataset, scripted_provider
):
    _error(api_client.post(EVALUATIONS, BODY, format="json"), 403, "permission_denied")
    _error(reader_client.post(EVALUATIONS, BODY, format="json"), 403, "permission_denied")
    assert client.post(EVALUATIONS, BODY, content_type="application/json").status_code == 401
    assert not EvaluationRun.objects.exists()


# Reading ------------------------------------------------------------------------------------


def test_listing_and_filtering_runs(api_client, finished_run, make_evaluation):
    queued = make_evaluation()
    listed = api_client.get(EVALUATIONS).json()
    assert [run["id"] for run in listed["results"]] == [queued.pk, finished_run.pk]
    by_status = api_client.get(EVALUATIONS, {"status": "succeeded"}).json()
    assert [run["id"] for run in by_status["results"]] == [finished_run.pk]
    assert api_client.get(EVALUATIONS, {"signature": "qa"}).json()["count"] == 2
    for name in ("other", "Bad Name", "x" * 500):
        assert api_client.get(EVALUATIONS, {"signature": name}).json()["count"] == 0
    # The request guard refuses a NUL character in any query parameter.
    assert api_client.get(EVALUATIONS, {"signature": "qa\x00"}).status_code == 400
    _error(api_client.get(EVALUATIONS, {"status": "done"}), 400, "invalid_request")
    _error(api_client.get(EVALUATIONS, {"limit": "x"}), 400, "invalid_request")


def test_reading_needs_an_api_key_or_the_view_permission(finished_run, api_client, reader_client):
    detail = f"{EVALUATIONS}{finished_run.pk}/"
    assert api_client.get(detail).status_code == 200
    assert reader_client.get(detail).status_code == 200
    no_perms = _client(StaffUserFactory(username="nobody"))
    _error(no_perms.get(detail), 403, "permission_denied")
    _error(no_perms.get(EVALUATIONS), 403, "permission_denied")
    assert APIClient().get(detail).status_code == 401


@pytest.mark.parametrize("run_id", ["999999", "abc", "99999999999999999999999", "-1", "0"])
def test_an_unknown_run_is_a_404(api_client, run_id):
    _error(api_client.get(f"{EVALUATIONS}{run_id}/"), 404, "evaluation_not_found")
    _error(api_client.get(f"{EVALUATIONS}{run_id}/results/"), 404, "evaluation_not_found")


def test_a_runs_results_are_paginated_and_filtered(api_client, finished_run):
    url = f"{EVALUATIONS}{finished_run.pk}/results/"
    page = api_client.get(url, {"limit": 2}).json()
    assert page["count"] == 5 and len(page["results"]) == 2
    first = page["results"][0]
    assert first["prediction"] == {"answer": "Paris"} and first["raw_output"].strip() == "Paris"
    assert set(first) >= {"position", "inputs", "expected", "accepted", "score", "latency_ms"}
    wrong = api_client.get(url, {"show": "wrong"}).json()
    assert [r["expected"]["answer"] for r in wrong["results"]] == ["Madrid", "Tokyo"]
    assert api_client.get(url, {"show": "error"}).json()["count"] == 0
    _error(api_client.get(url, {"show": "bad"}), 400, "invalid_request")


# Cancelling ---------------------------------------------------------------------------------


def test_cancelling_a_queued_run(editor_client, make_evaluation):
    run = make_evaluation()
    response = editor_client.post(f"{EVALUATIONS}{run.pk}/cancel/")
    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["error_code"]) == ("cancelled", "cancelled")


def test_cancelling_a_running_run_asks_it_to_stop(editor_client, make_evaluation):
    run = make_evaluation()
    EvaluationRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    body = editor_client.post(f"{EVALUATIONS}{run.pk}/cancel/").json()
    assert (body["status"], body["cancel_requested"]) == ("running", True)


def test_cancelling_needs_the_change_permission(api_client, reader_client, make_evaluation):
    run = make_evaluation()
    url = f"{EVALUATIONS}{run.pk}/cancel/"
    _error(api_client.post(url), 403, "permission_denied")
    _error(reader_client.post(url), 403, "permission_denied")
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_cancelling_an_unknown_run(editor_client):
    _error(editor_client.post(f"{EVALUATIONS}12345/cancel/"), 404, "evaluation_not_found")


# Comparing ----------------------------------------------------------------------------------


def test_comparing_two_runs(api_client, finished_run, qa_version):
    madrid = finished_run.results.get(expected__answer="Madrid").position
    b = evaluation_from_outcomes(
        version=qa_version,
        dataset=finished_run.dataset,
        split="dev",
        provider=finished_run.provider,
        metric="exact_match",
        metric_params={},
        outcomes=_outcomes_of(finished_run, {madrid: "Madrid"}),
    )
    response = api_client.get(f"{EVALUATIONS}compare/", {"a": finished_run.pk, "b": b.pk})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["a"]["score"], body["b"]["score"]) == (pytest.approx(0.6), pytest.approx(0.8))
    assert (body["compared"], body["better"], body["worse"], body["differences_total"]) == (
        5,
        1,
        0,
        1,
    )
    assert body["differences"] == [
        {
            "position": madrid,
            "inputs": finished_run.results.get(position=madrid).inputs,
            "expected": {"answer": "Madrid"},
            "change": "better",
            "a": {"prediction": {"answer": "Paris"}, "score": 0.0, "error_code": ""},
            "b": {"prediction": {"answer": "Madrid"}, "score": 1.0, "error_code": ""},
        }
    ]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({}, 400, "invalid_request"),
        ({"a": "1"}, 400, "invalid_request"),
        ({"a": "x", "b": "y"}, 404, "evaluation_not_found"),
        ({"limit": "0"}, 400, "invalid_request"),
        ({"limit": "501"}, 400, "invalid_request"),
    ],
)
def test_bad_comparisons(api_client, finished_run, query, status, code):
    if "limit" in query:
        query = query | {"a": finished_run.pk, "b": finished_run.pk}
    _error(api_client.get(f"{EVALUATIONS}compare/", query), status, code)


def test_runs_on_different_splits_are_not_comparable(api_client, finished_run, make_evaluation):
    other = make_evaluation(split="train")
    body = _error(
        api_client.get(f"{EVALUATIONS}compare/", {"a": finished_run.pk, "b": other.pk}),
        400,
        "not_comparable",
    )
    assert "did not run on the same data" in body["message"]


def test_the_schema_documents_the_routes(api_client, admin_client):
    schema = admin_client.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    assert {"post", "get"} <= set(paths["/api/v1/evaluations/"])
    assert "get" in paths["/api/v1/evaluations/compare/"]
    assert "post" in paths["/api/v1/evaluations/{run_id}/cancel/"]
    assert "get" in paths["/api/v1/evaluations/{run_id}/results/"]
