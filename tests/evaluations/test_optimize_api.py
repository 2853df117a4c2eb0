"""Optimization runs through the API, the admin and the commands; one on a real cluster; one
real LabeledFewShot optimization of `qa` on the default model (`slow_model`)."""

import io
import json
import time

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from evaluations.models import OptimizationRun, Optimizer, RunStatus
from evaluations.optimization_admin import trajectory_svg
from evaluations.services.optimize import optimization_create, optimization_process
from registry.models import Promotion
from registry.services.aliases import alias_set
from tests.evaluations.conftest import dataset_make
from tests.evaluations.test_optimize import sums_dataset
from tests.support.factories import ProviderFactory, StaffUserFactory
from tests.support.learning_engine import LEARNING_ENGINE

OPTIMIZATIONS = "/api/v1/optimizations/"
RUN_PERMS = ("view_optimizationrun", "add_optimizationrun", "change_optimizationrun")
PROMOTE_PERMS = ("add_promotion", "add_alias", "change_alias")
BODY = {
    "signature": "qa",
    "version": "1",
    "dataset": "sums",
    "metric": "exact_match",
    "student": "learner",
    "optimizer": "labeled_few_shot",
    "params": {"k": 4},
}


@pytest.fixture
def sums(qa_version):
    return sums_dataset(qa_version)


@pytest.fixture
def learner(db):
    return ProviderFactory(name="learner", engine_path=LEARNING_ENGINE, model="learning")


def _client(*perms: str) -> APIClient:
    client = APIClient()
    client.force_login(StaffUserFactory(username="operator", perms=perms))
    return client


@pytest.fixture
def editor_client(db) -> APIClient:
    return _client(*RUN_PERMS, *PROMOTE_PERMS)


def _run(qa_version, sums, learner, **overrides) -> OptimizationRun:
    arguments = {
        "version": qa_version,
        "dataset": sums,
        "train_split": "train",
        "dev_split": "dev",
        "metric": "exact_match",
        "student_provider": learner,
        "optimizer": Optimizer.LABELED_FEW_SHOT,
        "params": {"k": 4},
    } | overrides
    run = optimization_create(**arguments)
    optimization_process(run_id=run.pk)
    run.refresh_from_db()
    return run


# API ------------------------------------------------------------------------------------------


def test_post_runs_it_and_get_shows_progress_scores_and_result(
    editor_client, sums, learner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = editor_client.post(OPTIMIZATIONS, BODY, format="json")
    assert response.status_code == 202, response.content
    created = response.json()
    assert created["status"] == "queued"
    assert created["params"] == {"k": 4} and created["seed"] == 0
    # The test settings run django-q2 tasks synchronously: the task ran on commit.
    body = editor_client.get(response["Location"]).json()
    assert body["status"] == "succeeded", body
    assert body["stage"] == "done"
    assert (body["trials_done"], body["trials_total"]) == (1, 1)
    assert body["best_score"] == 1.0 and body["baseline_score"] < 1.0
    assert body["result_version"] == 2
    assert [point["label"] for point in body["trajectory"]] == ["version 1", "version 2"]
    listed = editor_client.get(OPTIMIZATIONS, {"signature": "qa"}).json()
    assert [item["id"] for item in listed["results"]] == [created["id"]]


def test_bad_bodies_answer_400_in_the_error_shape(editor_client, sums, learner):
    mipro = editor_client.post(OPTIMIZATIONS, BODY | {"optimizer": "mipro_v2"}, format="json")
    assert mipro.status_code == 400
    body = mipro.json()
    assert body["code"] == "invalid_optimization"
    assert "teacher_provider" in body["errors"]
    assert "k" in body["errors"]["params"]  # LabeledFewShot's param is not MIPROv2's
    shape = editor_client.post(
        OPTIMIZATIONS, BODY | {"optimizer": "sgd", "seed": -1, "params": []}, format="json"
    )
    assert shape.status_code == 400
    assert set(shape.json()["errors"]) >= {"optimizer", "seed", "params"}
    unknown = editor_client.post(OPTIMIZATIONS, BODY | {"student": "nobody"}, format="json")
    assert unknown.status_code == 404
    assert editor_client.get(f"{OPTIMIZATIONS}999999999999999999999/").status_code == 404
    assert not OptimizationRun.objects.exists()


def test_permissions(api_client, sums, learner, db):
    assert api_client.post(OPTIMIZATIONS, BODY, format="json").status_code == 403
    assert api_client.get(OPTIMIZATIONS).status_code == 200
    reader = _client("view_optimizationrun")
    assert reader.post(OPTIMIZATIONS, BODY, format="json").status_code == 403
    assert reader.get(f"{OPTIMIZATIONS}optimizers/").status_code == 200


def test_cancel_a_queued_run(editor_client, sums, learner):
    created = editor_client.post(OPTIMIZATIONS, BODY, format="json").json()
    cancelled = editor_client.post(f"{OPTIMIZATIONS}{created['id']}/cancel/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"


def test_promote_the_result(editor_client, qa_version, sums, learner):
    alias_set(signature=qa_version.signature, name="production", version=qa_version)
    run = _run(qa_version, sums, learner)
    response = editor_client.post(f"{OPTIMIZATIONS}{run.pk}/promote/", {}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["from_version"], body["to_version"]) == (1, 2)
    assert (body["from_score"], body["to_score"]) == (run.baseline_score, run.best_score)
    again = editor_client.post(f"{OPTIMIZATIONS}{run.pk}/promote/", {}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "already_promoted"


def test_a_result_no_better_is_not_promoted(editor_client, qa_version, sums, learner):
    alias_set(signature=qa_version.signature, name="production", version=qa_version)
    # k=1: each dev question needing more than one demo still rambles, and production is
    # first moved to a better version.
    best = _run(qa_version, sums, learner)
    alias_set(signature=qa_version.signature, name="production", version=best.result_version)
    weaker = _run(qa_version, sums, learner, params={"k": 1})
    response = editor_client.post(f"{OPTIMIZATIONS}{weaker.pk}/promote/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "not_better"
    assert Promotion.objects.count() == 0


# Admin ----------------------------------------------------------------------------------------


def test_admin_list_detail_chart_promote_and_new(admin_client, qa_version, sums, learner):
    alias_set(signature=qa_version.signature, name="production", version=qa_version)
    run = _run(qa_version, sums, learner)
    listing = admin_client.get(reverse("admin:evaluations_optimizationrun_changelist"))
    assert listing.status_code == 200
    assert f"{run.best_score:.3f}" in listing.content.decode()
    page = admin_client.get(reverse("admin:evaluations_optimizationrun_change", args=[run.pk]))
    text = page.content.decode()
    assert "<svg" in text and "<polyline" in text and "<script" not in text.split("<svg")[1]
    assert "Promote result to production" in text and 'name="force"' in text
    promote = reverse("admin:evaluations_optimizationrun_promote", args=[run.pk])
    done = admin_client.post(promote, {"reason": "better"}, follow=True)
    assert "Promoted: production now points at version 2" in done.content.decode()
    refused = admin_client.post(promote, {}, follow=True)
    assert "Not promoted" in refused.content.decode()
    form = admin_client.get(reverse("admin:evaluations_optimizationrun_new"))
    assert form.status_code == 200 and "max_bootstrapped_demos" in form.content.decode()
    bad = admin_client.post(
        reverse("admin:evaluations_optimizationrun_new"),
        {
            "signature": "qa",
            "dataset": "sums",
            "train_split": "train",
            "dev_split": "dev",
            "metric": "exact_match",
            "student": "learner",
            "optimizer": "mipro_v2",
            "params": "{}",
            "seed": "0",
        },
    )
    assert "MIPROv2 proposes instructions" in bad.content.decode()


def test_admin_needs_permissions_for_its_actions(qa_version, sums, learner):
    run = _run(qa_version, sums, learner)
    client = Client()
    client.force_login(StaffUserFactory(username="viewer", perms=("view_optimizationrun",)))
    page = client.get(reverse("admin:evaluations_optimizationrun_change", args=[run.pk]))
    assert page.status_code == 200
    assert "Promote result" not in page.content.decode()
    promote = reverse("admin:evaluations_optimizationrun_promote", args=[run.pk])
    assert client.post(promote).status_code == 403
    assert client.get(reverse("admin:evaluations_optimizationrun_new")).status_code == 403


def test_the_chart_marks_minibatch_points_hollow():
    svg = trajectory_svg(
        [
            {"label": "version 1", "score": 0.2, "examples": 10, "full": True},
            {"label": "trial 1", "score": 0.5, "examples": 3, "full": False},
            {"label": "version 2", "score": 0.9, "examples": 10, "full": True},
        ]
    )
    assert svg.count("<circle") == 3
    assert svg.count('fill="#ffffff"') == 1
    assert "trial 1: 0.500 (3 examples)" in svg
    assert trajectory_svg([]) == ""


# Commands -------------------------------------------------------------------------------------


def test_optimize_command_here_with_progress_and_promote(qa_version, sums, learner):
    alias_set(signature=qa_version.signature, name="production", version=qa_version)
    out = io.StringIO()
    call_command(
        "evaluations_optimize",
        "qa",
        "--dataset",
        "sums",
        "--student",
        "learner",
        "--optimizer",
        "bootstrap_few_shot",
        "--params",
        json.dumps({"max_labeled_demos": 0}),
        "--seed",
        "1",
        "--here",
        "--promote",
        stdout=out,
    )
    text = out.getvalue()
    assert "in this process" in text
    assert "succeeded, stage done, trials 1/1" in text
    assert "Version 2 of qa: exact_match" in text
    assert "Promoted: production -> version 2" in text
    assert OptimizationRun.objects.get().seed == 1


def test_optimize_command_errors(qa_version, sums, learner):
    with pytest.raises(CommandError, match=r"params\.k: `k` must be at least 1"):
        call_command(
            "evaluations_optimize",
            "qa",
            "--dataset",
            "sums",
            "--student",
            "learner",
            "--optimizer",
            "labeled_few_shot",
            "--params",
            '{"k": 0}',
            stdout=io.StringIO(),
        )
    with pytest.raises(CommandError, match="JSON object"):
        call_command(
            "evaluations_optimize",
            "qa",
            "--dataset=sums",
            "--student=learner",
            "--optimizer=labeled_few_shot",
            "--params=[1]",
            stdout=io.StringIO(),
        )


def test_library_command_refuses_unknown_templates(db):
    with pytest.raises(CommandError, match="Not library templates: nope"):
        call_command("evaluations_optimize_library", "nope", stdout=io.StringIO())


# A real cluster -------------------------------------------------------------------------------


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_a_run_on_a_real_cluster(start_cluster, qa_version, learner, settings):
    sums = sums_dataset(qa_version)
    start_cluster()
    client = _client(*RUN_PERMS)
    created = client.post(OPTIMIZATIONS, BODY | {"dataset": sums.name}, format="json").json()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = client.get(f"{OPTIMIZATIONS}{created['id']}/").json()
        if body["status"] in RunStatus.values and body["status"] not in ("queued", "running"):
            break
        time.sleep(0.5)
    assert body["status"] == "succeeded", body
    assert body["best_score"] == 1.0 and body["result_version"] == 2
    assert OptimizationRun.objects.get().task_id


# The default model ----------------------------------------------------------------------------

# Short factual questions, asked the way the starter dataset asks them; the train answers
# show the model the format (the answer alone).
QA_TRAIN = [
    ("What is the capital of France?", "Paris"),
    ("What colour is the sky on a clear day?", "blue"),
    ("How many legs does a dog have?", "4"),
    ("What is the opposite of hot?", "cold"),
    ("What is 3 + 4?", "7"),
    ("What is the capital of Germany?", "Berlin"),
]
QA_DEV = [
    ("What is the capital of Italy?", "Rome"),
    ("What is the opposite of day?", "night"),
    ("What colour is grass?", "green"),
    ("How many days are in a week?", "7"),
    ("What is 2 + 2?", "4"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the opposite of up?", "down"),
    ("What colour is snow?", "white"),
    ("What is the capital of Japan?", "Tokyo"),
    ("How many wheels does a bicycle have?", "2"),
]


@pytest.mark.slow_model
def test_labeled_few_shot_of_qa_on_the_default_model_raises_its_dev_score(
    default_model_dir, library_qa_version
):
    from providers.services import provider_ensure_default

    provider = provider_ensure_default(model_path=default_model_dir)
    examples = [("train", {"question": q}, {"answer": a}, {}) for q, a in QA_TRAIN] + [
        ("dev", {"question": q}, {"answer": a}, {}) for q, a in QA_DEV
    ]
    dataset = dataset_make(version=library_qa_version, name="small", examples=examples)
    run = optimization_create(
        version=library_qa_version,
        dataset=dataset,
        train_split="train",
        dev_split="dev",
        metric="exact_match",
        student_provider=provider,
        optimizer=Optimizer.LABELED_FEW_SHOT,
        params={"k": 6},
    )
    assert optimization_process(run_id=run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.best_score > run.baseline_score, run.trajectory
    assert len(run.result_version.compiled_state["demos"]) == 6


@pytest.fixture
def library_qa_version(db):
    """The library's `qa` template as version 1 (without its shipped compiled version)."""
    from registry import library
    from registry.services.signatures import signature_create
    from registry.services.versions import signature_version_create

    entry = next(entry for entry in library.SIGNATURES if entry["name"] == "qa")
    signature = signature_create(name="qa", description=entry["description"])
    return signature_version_create(signature=signature, spec=entry["spec"]).version
