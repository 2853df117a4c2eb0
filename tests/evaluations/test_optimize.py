"""Optimization runs (evaluations.services.optimize): validation, every optimizer on the
learning engine (its dev score rises with demos), cancellation, the reaper, the process.

The learning engine (tests/support/learning_engine.py) knows every sum but answers short,
the way exact match wants, only once the prompt carries enough demos for that question."""

import pytest
from django.db import connection

from evaluations.models import EvaluationRun, OptimizationRun, Optimizer, RunStatus
from evaluations.services import lifecycle
from evaluations.services.optimize import (
    OPTIMIZER_PARAMS,
    InvalidOptimization,
    optimization_cancel,
    optimization_create,
    optimization_process,
    optimizer_catalogue,
)
from providers.models import Provider
from registry.models import VersionScore
from registry.programs import compiled_state_check, program_build
from tests.evaluations.conftest import dataset_make
from tests.support.factories import ProviderFactory, SignatureVersionFactory
from tests.support.learning_engine import LEARNING_ENGINE, demos_needed, sum_question

pytestmark = pytest.mark.django_db

CANCELLING_METRIC = "tests.evaluations.test_optimize.cancelling_metric"
CANCELLING_AT_ONCE_METRIC = "tests.evaluations.test_optimize.cancelling_at_once_metric"


def sum_rows(count: int, *, start: int, split: str) -> list[tuple[str, dict, dict, dict]]:
    rows = []
    for index in range(count):
        a, b = start + index, 2 * index + 1
        rows.append((split, {"question": sum_question(a, b)}, {"answer": str(a + b)}, {}))
    return rows


def sums_dataset(version, name: str = "sums", *, train: int = 8, dev: int = 10):
    examples = sum_rows(train, start=1, split="train") + sum_rows(dev, start=40, split="dev")
    return dataset_make(version=version, name=name, examples=examples)


@pytest.fixture
def sums(qa_version):
    return sums_dataset(qa_version)


@pytest.fixture
def learner(db) -> Provider:
    return ProviderFactory(name="learner", engine_path=LEARNING_ENGINE, model="learning")


@pytest.fixture
def make_run(qa_version, sums, learner):
    def make(**overrides):
        arguments = {
            "version": qa_version,
            "dataset": sums,
            "train_split": "train",
            "dev_split": "dev",
            "metric": "exact_match",
            "student_provider": learner,
            "optimizer": Optimizer.LABELED_FEW_SHOT,
        } | overrides
        return optimization_create(**arguments)

    return make


def dev_baseline(dataset) -> float:
    """What version 1 (no demos) scores on the dev split: the questions needing no demo."""
    dev = dataset.examples.filter(split="dev")
    return sum(demos_needed(e.inputs["question"]) == 0 for e in dev) / dev.count()


def demos_of(version) -> list[dict]:
    return version.compiled_state["demos"]


# Creation and validation ----------------------------------------------------------------------


def test_create_stores_params_with_their_defaults_and_queues(make_run):
    run = make_run(optimizer=Optimizer.BOOTSTRAP_FEW_SHOT, params={"max_rounds": 2}, seed=7)
    assert run.status == RunStatus.QUEUED
    assert run.params == {"max_bootstrapped_demos": 4, "max_labeled_demos": 4, "max_rounds": 2}
    assert run.seed == 7
    assert run.dataset_hash == run.dataset.content_hash


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"k": 0}, "k", "invalid_param"),
        ({"k": "four"}, "k", "invalid_param"),
        ({"k": True}, "k", "invalid_param"),
        ({"k": 65}, "k", "invalid_param"),
        ({"depth": 2}, "depth", "unknown_param"),
    ],
)
def test_params_are_checked_per_optimizer(make_run, params, field, code):
    with pytest.raises(InvalidOptimization) as caught:
        make_run(params=params)
    assert caught.value.errors["params"][field][0]["code"] == code
    assert OptimizationRun.objects.count() == 0


def test_mipro_needs_a_teacher(make_run):
    with pytest.raises(InvalidOptimization) as caught:
        make_run(optimizer=Optimizer.MIPRO_V2)
    assert caught.value.errors["teacher_provider"][0]["code"] == "teacher_required"
    assert "prompt model" in caught.value.errors["teacher_provider"][0]["message"]


def test_mipro_auto_and_explicit_budgets_exclude_each_other(make_run, learner):
    with pytest.raises(InvalidOptimization) as caught:
        make_run(optimizer=Optimizer.MIPRO_V2, teacher_provider=learner, params={"num_trials": 3})
    assert "set auto to null" in caught.value.errors["params"]["num_trials"][0]["message"]
    with pytest.raises(InvalidOptimization) as caught:
        make_run(
            optimizer=Optimizer.MIPRO_V2,
            teacher_provider=learner,
            params={"auto": None, "minibatch": False},
        )
    assert set(caught.value.errors["params"]) == {"num_candidates", "num_trials"}
    with pytest.raises(InvalidOptimization) as caught:
        make_run(
            optimizer=Optimizer.MIPRO_V2,
            teacher_provider=learner,
            params={"auto": None, "num_candidates": 2, "num_trials": 2, "minibatch_size": 35},
        )
    assert "exceeds the dev split's 10" in str(caught.value.errors["params"]["minibatch_size"])


def test_bad_references_are_refused_together(make_run, make_dataset, learner):
    other = SignatureVersionFactory()
    foreign = dataset_make(
        version=other, name="foreign", examples=sum_rows(2, start=1, split="dev")
    )
    pool = ProviderFactory(name="pool", kind=Provider.Kind.POOL, model="", engine_path="")
    with pytest.raises(InvalidOptimization) as caught:
        make_run(
            dataset=foreign,
            student_provider=pool,
            metric="no_such_metric",
            seed=-1,
            optimizer="gradient_descent",
        )
    errors = caught.value.errors
    assert errors["dataset"][0]["code"] == "wrong_signature"
    assert "is a pool" in errors["student_provider"][0]["message"]
    assert set(errors) >= {"metric", "seed", "optimizer"}


def test_splits_must_hold_examples_and_differ(make_run):
    with pytest.raises(InvalidOptimization) as caught:
        make_run(train_split="test")
    assert caught.value.errors["train_split"][0]["code"] == "empty_split"
    with pytest.raises(InvalidOptimization) as caught:
        make_run(train_split="dev")
    assert caught.value.errors["dev_split"][0]["code"] == "same_split"


def test_catalogue_lists_every_optimizer_and_its_params():
    catalogue = {entry["name"]: entry for entry in optimizer_catalogue()}
    assert set(catalogue) == set(Optimizer.values)
    assert catalogue["mipro_v2"]["needs_teacher"] is True
    assert set(catalogue["labeled_few_shot"]["params"]) == set(OPTIMIZER_PARAMS["labeled_few_shot"])


# Every optimizer on the learning engine -------------------------------------------------------


def assert_optimized(run: OptimizationRun, dataset) -> None:
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert run.stage == "done"
    assert run.baseline_score == pytest.approx(dev_baseline(dataset))
    assert run.best_score > run.baseline_score
    result = run.result_version
    assert result.number == 2
    assert demos_of(result)
    compiled_state_check(name="qa", behaviour=result.behaviour())
    assert all(not key.startswith("dspy_") for demo in demos_of(result) for key in demo)
    assert f"Optimization run {run.pk}" in result.changelog
    assert run.dataset_hash in result.changelog
    assert f"{run.best_score:.3f}" in result.changelog
    # Both scores are recorded on exactly this data, and nothing else changed.
    scores = VersionScore.objects.filter(dataset_hash=run.dataset_hash, split="dev")
    assert {(s.signature_version.number, s.score) for s in scores} == {
        (1, run.baseline_score),
        (2, run.best_score),
    }
    assert not result.aliases.exists()
    assert run.trajectory[0]["score"] == run.baseline_score
    assert run.trajectory[-1]["score"] == run.best_score


def test_labeled_few_shot_raises_the_dev_score(make_run, sums):
    run = make_run(params={"k": 4})
    optimization_process(run_id=run.pk)
    run.refresh_from_db()
    assert_optimized(run, sums)
    assert run.best_score == 1.0
    assert len(demos_of(run.result_version)) == 4
    assert (run.trials_done, run.trials_total) == (1, 1)
    assert [point["label"] for point in run.trajectory] == ["version 1", "version 2"]


def test_bootstrap_few_shot_keeps_the_demos_the_metric_accepted(make_run, sums):
    run = make_run(
        optimizer=Optimizer.BOOTSTRAP_FEW_SHOT,
        params={"max_bootstrapped_demos": 4, "max_labeled_demos": 0},
    )
    optimization_process(run_id=run.pk)
    run.refresh_from_db()
    assert_optimized(run, sums)
    demos = demos_of(run.result_version)
    # Bootstrapped demos are the student's own (accepted) answers, marked as augmented.
    assert demos and all(demo.get("augmented") for demo in demos)
    train = {e.inputs["question"]: e.outputs["answer"] for e in sums.examples.filter(split="train")}
    assert all(train[demo["question"]] == demo["answer"] for demo in demos)


def test_random_search_records_each_candidate(make_run, sums):
    run = make_run(
        optimizer=Optimizer.BOOTSTRAP_RANDOM_SEARCH,
        params={"num_candidate_programs": 3, "max_labeled_demos": 2},
        seed=3,
    )
    optimization_process(run_id=run.pk)
    run.refresh_from_db()
    assert_optimized(run, sums)
    assert (run.trials_done, run.trials_total) == (6, 6)
    trials = [point for point in run.trajectory if point["label"].startswith("trial")]
    assert len(trials) == 6
    # The zero-shot candidate scores like version 1; the best trial is the result.
    assert trials[0]["score"] == pytest.approx(run.baseline_score, abs=1e-4)
    assert max(point["score"] for point in trials) == pytest.approx(run.best_score, abs=1e-4)


def test_the_seed_makes_a_run_reproducible(make_run):
    params = {"num_candidate_programs": 2}
    first = make_run(optimizer=Optimizer.BOOTSTRAP_RANDOM_SEARCH, params=params, seed=5)
    optimization_process(run_id=first.pk)
    second = make_run(optimizer=Optimizer.BOOTSTRAP_RANDOM_SEARCH, params=params, seed=5)
    optimization_process(run_id=second.pk)
    first.refresh_from_db()
    second.refresh_from_db()
    assert [p["score"] for p in first.trajectory] == [p["score"] for p in second.trajectory]
    # The same compiled state: the second run's version is the first's.
    assert second.result_version == first.result_version


def test_mipro_v2_with_a_teacher_in_its_lightest_settings(make_run, sums, learner):
    teacher = ProviderFactory(name="teacher", engine_path=LEARNING_ENGINE, model="teacher")
    run = make_run(
        optimizer=Optimizer.MIPRO_V2,
        teacher_provider=teacher,
        params={
            "auto": None,
            "num_candidates": 2,
            "num_trials": 2,
            "minibatch": False,
            "max_bootstrapped_demos": 2,
            "max_labeled_demos": 2,
        },
    )
    optimization_process(run_id=run.pk)
    run.refresh_from_db()
    assert_optimized(run, sums)
    assert run.trials_done == run.trials_total == 3  # the default program, then 2 trials
    program = program_build(name="qa", behaviour=run.result_version.behaviour())
    assert program.predictors()[0].demos


# Cancellation, failures, the reaper -----------------------------------------------------------


def _cancel_running() -> None:
    for run in OptimizationRun.objects.filter(status=RunStatus.RUNNING):
        optimization_cancel(run=run)


def cancelling_metric(example, prediction, trace=None):
    """Exact match that, once an optimizer bootstraps (a trace), asks every running
    optimization to stop, as a user would meanwhile."""
    if trace is not None:
        _cancel_running()
    return float(example.answer == prediction.answer)


def cancelling_at_once_metric(example, prediction, trace=None):
    """Exact match that asks every running optimization to stop at its first example."""
    _cancel_running()
    return float(example.answer == prediction.answer)


@pytest.mark.parametrize(
    ("metric", "stage"),
    [(CANCELLING_METRIC, "compiling"), (CANCELLING_AT_ONCE_METRIC, "baseline")],
)
def test_cancel_stops_the_run_at_its_next_example(make_run, metric, stage):
    run = make_run(
        optimizer=Optimizer.BOOTSTRAP_FEW_SHOT, metric=metric, params={"max_labeled_demos": 0}
    )
    assert optimization_process(run_id=run.pk) == RunStatus.CANCELLED
    run.refresh_from_db()
    assert run.error_code == "cancelled"
    assert run.stage == stage
    assert run.result_version is None
    assert run.signature_version.signature.versions.count() == 1
    # The baseline's own evaluation stopped too.
    assert not run.evaluations.exclude(status__in=[RunStatus.SUCCEEDED, RunStatus.CANCELLED])


def test_cancel_a_queued_run_at_once(make_run):
    run = optimization_cancel(run=make_run())
    assert run.status == RunStatus.CANCELLED
    assert optimization_process(run_id=run.pk) == RunStatus.CANCELLED


def test_a_failing_student_fails_the_run_at_its_baseline(make_run):
    broken = ProviderFactory(name="broken", engine_path="tests.support.engines.BrokenEngine")
    run = make_run(student_provider=broken)
    assert optimization_process(run_id=run.pk) == RunStatus.FAILED
    run.refresh_from_db()
    assert run.error_code == "baseline_failed"
    assert "version 1" in run.error_message


def test_a_reimported_dataset_fails_the_run(make_run, sums):
    run = make_run()
    type(sums).objects.filter(pk=sums.pk).update(content_hash="0" * 64)
    assert optimization_process(run_id=run.pk) == RunStatus.FAILED
    run.refresh_from_db()
    assert run.error_code == "dataset_changed"


def test_a_lost_worker_is_requeued_and_the_run_starts_over(make_run, sums, settings, clock):
    settings.EXECUTIONS_MAX_RUN_ATTEMPTS = 2
    run = make_run()
    # A worker claimed it, scored part of its baseline, and died.
    assert lifecycle.run_claim(model=OptimizationRun, run_id=run.pk, now=clock)
    OptimizationRun.objects.filter(pk=run.pk).update(stage="compiling", trials_done=1)
    orphan = EvaluationRun.objects.create(
        signature_version=run.signature_version,
        dataset=sums,
        dataset_hash=sums.content_hash,
        split="dev",
        provider=run.student_provider,
        metric="exact_match",
        optimization_run=run,
        status=RunStatus.RUNNING,
        heartbeat_at=clock(),
    )
    clock.advance(settings.EXECUTIONS_STALE_AFTER_S + 1)
    reaped = lifecycle.runs_reap_stale(now=clock)
    assert f"optimizationrun {run.pk}" in reaped.requeued
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert optimization_process(run_id=run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.attempts == 2
    assert_optimized(run, sums)
    orphan.refresh_from_db()
    assert orphan.cancel_requested


def test_a_second_delivery_finds_the_run_taken(make_run):
    run = make_run()
    assert lifecycle.run_claim(model=OptimizationRun, run_id=run.pk)
    assert optimization_process(run_id=run.pk) == RunStatus.RUNNING


@pytest.mark.django_db(transaction=True)
def test_the_queue_task_runs_it_in_a_sync_cluster(make_run, sums):
    """django-q2 in sync mode (the test settings) runs the task on commit, in this process."""
    run = make_run()
    connection.close()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert run.task_id
