"""Evaluation runs through their services, on PostgreSQL with deterministic engines."""

import pytest

from evaluations.metrics import InvalidMetric, metric_resolve
from evaluations.models import EvaluationResult, EvaluationRun, RunStatus
from evaluations.services import lifecycle
from evaluations.services.evaluate import (
    EvaluationsNotComparable,
    ExampleOutcome,
    InvalidEvaluation,
    evaluation_cancel,
    evaluation_compare,
    evaluation_create,
    evaluation_from_outcomes,
    evaluation_process,
    evaluation_progress,
    evaluation_result_save,
    evaluation_results,
    evaluation_score_inline,
    examples_score,
    score_summary,
)
from providers.exceptions import ProviderDisabled
from registry.models import DatasetExample, VersionScore
from registry.services.versions import signature_version_build
from tests.evaluations.conftest import QUIZ_DEV_RIGHT, QUIZ_DEV_TOTAL, dataset_make
from tests.support.engines import INPUT_TOKENS, call_marker, engine_calls, flaky_fails
from tests.support.factories import ProviderFactory, SignatureVersionFactory

THIS = "tests.evaluations.test_evaluate_service"


# Custom metrics, by dotted path -------------------------------------------------------------


def picky_metric(example, prediction, trace=None):
    """Fails on Spain, answers out of range on Japan, else exact (case-insensitive)."""
    if "Spain" in example.question:
        raise KeyError("no opinion about Spain")
    if "Japan" in example.question:
        return 1.5
    return prediction.answer.lower() == example.answer.lower()


def cancelling_metric(example, prediction, trace=None):
    """Asks the running evaluation to stop while it scores its second dev example."""
    if "Spain" in example.question:
        evaluation_cancel(run=EvaluationRun.objects.get(status=RunStatus.RUNNING))
    return 1.0


@pytest.fixture
def custom_metrics(settings):
    """This module's metrics may be named by dotted path."""
    settings.EVALUATIONS_CUSTOM_METRIC_MODULES = [*settings.EVALUATIONS_CUSTOM_METRIC_MODULES, THIS]


# Creating runs ------------------------------------------------------------------------------


def test_a_run_keeps_the_dataset_hash_and_the_split_size(make_evaluation, quiz_dataset):
    run = make_evaluation(metric_params={"threshold": 0.5})
    assert (run.status, run.total, run.done) == (RunStatus.QUEUED, QUIZ_DEV_TOTAL, 0)
    assert run.dataset_hash == quiz_dataset.content_hash
    assert run.metric_params["threshold"] == 0.5


def test_creating_enqueues_on_commit(make_evaluation, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        run = make_evaluation(enqueue=True)
    assert len(callbacks) == 1
    run.refresh_from_db()
    assert run.task_id == ""  # nothing before the commit
    with django_capture_on_commit_callbacks(execute=True):
        run = make_evaluation(enqueue=True)
    run.refresh_from_db()
    # The test settings run tasks synchronously: the worker has run it to its end.
    assert run.task_id and run.status == RunStatus.SUCCEEDED


def test_a_dataset_of_another_signature_is_refused(make_evaluation):
    other = SignatureVersionFactory(signature__name="other")
    dataset = dataset_make(
        version=other, name="theirs", examples=[("dev", {"question": "?"}, {"answer": "x"}, {})]
    )
    with pytest.raises(InvalidEvaluation) as caught:
        make_evaluation(dataset=dataset)
    assert caught.value.errors["dataset"][0]["code"] == "wrong_signature"
    assert "belongs to the signature 'other', not to 'qa'" in caught.value.message


def test_an_unknown_split_is_refused(make_evaluation):
    with pytest.raises(InvalidEvaluation) as caught:
        make_evaluation(split="holdout")
    assert caught.value.errors["split"][0]["code"] == "invalid_choice"


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_split_is_refused(make_evaluation, make_dataset, split):
    dataset = make_dataset("dev_only", rows=[("dev", "Q?", "A", [])])
    with pytest.raises(InvalidEvaluation) as caught:
        make_evaluation(dataset=dataset, split=split)
    assert caught.value.errors["split"][0]["code"] == "empty_split"
    assert f"no examples in its {split} split" in caught.value.message


def test_a_disabled_provider_is_refused(make_evaluation):
    disabled = ProviderFactory(name="off", enabled=False)
    with pytest.raises(ProviderDisabled):
        make_evaluation(provider=disabled)


@pytest.mark.parametrize(
    ("metric", "params"),
    [
        ("no_such_metric", None),
        ("exact_match", {"threshold": 7}),
        ("exact_match", {"fields": ["nope"]}),
        ("tests.nowhere.metric", None),
    ],
)
def test_a_metric_that_does_not_fit_is_refused(make_evaluation, metric, params):
    with pytest.raises(InvalidMetric):
        make_evaluation(metric=metric, metric_params=params)
    assert not EvaluationRun.objects.exists()


def test_metric_params_must_be_an_object(make_evaluation):
    with pytest.raises(InvalidEvaluation) as caught:
        make_evaluation(metric_params=["threshold"])
    assert caught.value.errors["metric_params"][0]["code"] == "wrong_type"


# The worker ---------------------------------------------------------------------------------


def test_a_run_scores_every_example_and_records_the_version_score(make_evaluation, qa_version):
    run = make_evaluation()
    assert evaluation_process(run_id=run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert (run.done, run.errors, run.attempts) == (QUIZ_DEV_TOTAL, 0, 1)
    assert run.score == pytest.approx(QUIZ_DEV_RIGHT / QUIZ_DEV_TOTAL)
    assert run.ci_low < run.score < run.ci_high
    assert (run.input_tokens, run.output_tokens) == (INPUT_TOKENS * QUIZ_DEV_TOTAL, QUIZ_DEV_TOTAL)
    assert run.finished_at and run.heartbeat_at

    results = list(run.results.all())
    dev = DatasetExample.objects.filter(dataset=run.dataset, split="dev").order_by("position")
    assert [r.position for r in results] == [e.position for e in dev]
    assert [r.expected["answer"] for r in results] == ["Paris", "Madrid", "Paris", "Tokyo", "paris"]
    assert [r.score for r in results] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert all(r.prediction == {"answer": "Paris"} for r in results)
    assert all(r.raw_output.strip() == "Paris" and r.error_code == "" for r in results)
    assert results[0].accepted == {"answer": ["Paris, France"]}
    assert results[0].inputs == dev[0].inputs

    score = VersionScore.objects.get()
    assert score.signature_version == qa_version
    assert (score.source, score.reference) == ("evaluation", f"evaluation run {run.pk}")
    assert (score.dataset_hash, score.split, score.metric) == (
        run.dataset_hash,
        "dev",
        "exact_match",
    )
    assert (score.score, score.examples, score.ci_low, score.ci_high) == (
        run.score,
        QUIZ_DEV_TOTAL,
        run.ci_low,
        run.ci_high,
    )
    assert (score.provider_name, score.model) == ("scripted", "scripted")


def test_the_metric_decides_what_is_right(make_evaluation):
    run = evaluation_score_inline(run=make_evaluation(metric="answer_contains"))
    assert run.status == RunStatus.SUCCEEDED
    assert run.score == pytest.approx(QUIZ_DEV_RIGHT / QUIZ_DEV_TOTAL)


def _markers(*, failing: int, passing: int) -> list[str]:
    """Call markers the flaky engine fails (first) and answers (then)."""
    found: dict[bool, list[str]] = {True: [], False: []}
    while len(found[True]) < failing or len(found[False]) < passing:
        marker = call_marker()
        found[flaky_fails(marker)].append(marker)
    return found[True][:failing] + found[False][:passing]


def test_a_provider_failure_is_the_examples_error_not_the_runs(qa_version, flaky_provider):
    markers = _markers(failing=2, passing=3)
    dataset = dataset_make(
        version=qa_version,
        name="flaky",
        examples=[("dev", {"question": f"Q {m}"}, {"answer": "Paris"}, {}) for m in markers],
    )
    run = evaluation_create(
        version=qa_version,
        dataset=dataset,
        split="dev",
        provider=flaky_provider,
        metric="exact_match",
        enqueue=False,
    )
    assert evaluation_process(run_id=run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert (run.done, run.errors, run.score) == (5, 2, pytest.approx(0.6))
    failed = list(evaluation_results(run=run, show="error"))
    assert [r.position for r in failed] == [1, 2]
    assert all(r.score == 0 and r.prediction is None for r in failed)
    assert {r.error_code for r in failed} == {"server"}
    assert all("The provider flaky failed" in r.error_message for r in failed)
    assert [r.position for r in evaluation_results(run=run, show="wrong")] == [1, 2]
    assert VersionScore.objects.get().score == pytest.approx(0.6)


def test_a_run_whose_every_example_failed_is_failed_without_a_score(
    make_evaluation, broken_provider
):
    run = evaluation_score_inline(run=make_evaluation(provider=broken_provider))
    assert (run.status, run.error_code) == (RunStatus.FAILED, "examples_failed")
    assert f"Every example failed (server x{QUIZ_DEV_TOTAL})" in run.error_message
    assert (run.done, run.errors, run.score) == (QUIZ_DEV_TOTAL, QUIZ_DEV_TOTAL, None)
    assert not VersionScore.objects.exists()


def test_a_metric_failure_is_the_examples_error(make_evaluation, custom_metrics):
    run = evaluation_score_inline(run=make_evaluation(metric=f"{THIS}.picky_metric"))
    assert run.status == RunStatus.SUCCEEDED
    by_question = {r.inputs["question"].split(" (")[0]: r for r in run.results.all()}
    spain = by_question["What is the capital of Spain?"]
    japan = by_question["What is the capital of Japan?"]
    assert (spain.error_code, spain.score, spain.prediction) == (
        "metric_failed",
        0.0,
        {"answer": "Paris"},
    )
    assert "KeyError" in spain.error_message and "no opinion about Spain" in spain.error_message
    assert japan.error_code == "metric_failed" and "returned 1.5" in japan.error_message
    assert (run.done, run.errors) == (QUIZ_DEV_TOTAL, 2)
    assert run.score == pytest.approx(3 / 5)


def test_a_dataset_re_imported_after_creation_fails_the_run(make_evaluation, quiz_dataset):
    run = make_evaluation()
    type(quiz_dataset).objects.filter(pk=quiz_dataset.pk).update(content_hash="0" * 64)
    assert evaluation_process(run_id=run.pk) == RunStatus.FAILED
    run.refresh_from_db()
    assert run.error_code == "dataset_changed"
    assert not run.results.exists()


def test_a_second_delivery_finds_the_run_taken(make_evaluation):
    run = make_evaluation()
    assert evaluation_process(run_id=run.pk) == RunStatus.SUCCEEDED
    assert evaluation_process(run_id=run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert (run.attempts, run.results.count()) == (1, QUIZ_DEV_TOTAL)
    assert VersionScore.objects.count() == 1


def test_a_run_whose_worker_was_lost_resumes_and_scores_no_example_twice(
    qa_version, quiz_dataset, counting_provider, calls_log, clock, settings
):
    settings.EXECUTIONS_STALE_AFTER_S = 60
    settings.EXECUTIONS_MAX_RUN_ATTEMPTS = 2
    run = evaluation_create(
        version=qa_version,
        dataset=quiz_dataset,
        split="dev",
        provider=counting_provider,
        metric="exact_match",
        enqueue=False,
    )
    # The first worker claims the run and saves two results, then is lost.
    assert lifecycle.run_claim(model=EvaluationRun, run_id=run.pk, now=clock)
    examples = list(DatasetExample.objects.filter(dataset=quiz_dataset, split="dev"))
    examples_score(
        program=signature_version_build(version=qa_version),
        provider=counting_provider,
        metric=metric_resolve(name="exact_match", params=None, version=qa_version),
        examples=examples[:2],
        on_outcome=lambda outcome: evaluation_result_save(run_id=run.pk, outcome=outcome),
    )
    run.refresh_from_db()
    assert (run.status, run.done) == (RunStatus.RUNNING, 2)
    assert lifecycle.runs_reap_stale(now=clock).requeued == []  # its heartbeat is fresh

    clock.advance(61)
    assert lifecycle.runs_reap_stale(now=clock).requeued == [f"evaluationrun {run.pk}"]
    run.refresh_from_db()
    assert (run.status, run.attempts) == (RunStatus.QUEUED, 1)

    assert evaluation_process(run_id=run.pk, now=clock) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert (run.attempts, run.done, run.errors) == (2, QUIZ_DEV_TOTAL, 0)
    assert run.score == pytest.approx(QUIZ_DEV_RIGHT / QUIZ_DEV_TOTAL)
    calls = engine_calls(calls_log)
    markers = [e.inputs["question"].rsplit("(", 1)[1].rstrip(")") for e in examples]
    assert calls == {marker: 1 for marker in markers}
    assert run.results.count() == QUIZ_DEV_TOTAL


def test_a_result_is_saved_once_per_position(make_evaluation):
    run = make_evaluation()
    outcome = ExampleOutcome(
        position=4,
        inputs={"question": "Q"},
        expected={"answer": "A"},
        accepted={},
        prediction={"answer": "A\x00"},
        raw_output="A\x00",
        score=1.0,
        error_code="",
        error_message="",
        latency_ms=3.0,
        input_tokens=2,
        output_tokens=1,
    )
    assert evaluation_result_save(run_id=run.pk, outcome=outcome)
    assert not evaluation_result_save(run_id=run.pk, outcome=outcome)
    run.refresh_from_db()
    assert (run.done, run.input_tokens) == (1, 2)
    saved = EvaluationResult.objects.get()
    # PostgreSQL stores no NUL character: a visible replacement stands in for it.
    assert (saved.prediction, saved.raw_output) == ({"answer": "A\ufffd"}, "A\ufffd")


# Cancelling ---------------------------------------------------------------------------------


def test_a_queued_run_is_cancelled_at_once(make_evaluation):
    run = evaluation_cancel(run=make_evaluation())
    assert (run.status, run.error_code) == (RunStatus.CANCELLED, "cancelled")
    assert evaluation_process(run_id=run.pk) == RunStatus.CANCELLED
    assert not run.results.exists()


def test_a_running_run_stops_at_its_next_example_and_keeps_its_results(
    make_evaluation, custom_metrics
):
    run = evaluation_score_inline(run=make_evaluation(metric=f"{THIS}.cancelling_metric"))
    assert (run.status, run.error_code) == (RunStatus.CANCELLED, "cancelled")
    # Cancelled while the second dev example was scored: that one is kept, none after it.
    assert (run.done, run.results.count(), run.score) == (2, 2, None)
    assert not VersionScore.objects.exists()


def test_a_finished_run_cannot_be_cancelled(make_evaluation):
    run = evaluation_score_inline(run=make_evaluation())
    assert evaluation_cancel(run=run).status == RunStatus.SUCCEEDED


# Concurrency --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_examples_are_scored_in_a_pool_of_threads(make_evaluation, settings):
    settings.EVALUATIONS_CONCURRENCY = 3
    run = evaluation_score_inline(run=make_evaluation())
    assert (run.status, run.done) == (RunStatus.SUCCEEDED, QUIZ_DEV_TOTAL)
    assert sorted(run.results.values_list("score", flat=True)) == [0.0, 0.0, 1.0, 1.0, 1.0]
    stops = []
    outcomes = examples_score(
        program=signature_version_build(version=run.signature_version),
        provider=run.provider,
        metric=metric_resolve(name="exact_match", params=None, version=run.signature_version),
        examples=list(DatasetExample.objects.filter(dataset=run.dataset)),
        on_outcome=lambda outcome: None,
        should_stop=lambda: stops.append(1) or len(stops) > 4,
        concurrency=2,
    )
    # Four examples were started before it said stop; they all finished and were reported.
    assert len(outcomes) == 4


# Outcomes computed elsewhere, comparing, progress -------------------------------------------


def _outcomes_of(run: EvaluationRun, answers: dict[int, str]) -> list[ExampleOutcome]:
    """The run's examples, answered as `answers` says (by position) or as the run did."""
    outcomes = []
    for result in run.results.all():
        answer = answers.get(result.position, result.prediction["answer"])
        right = answer.lower() == result.expected["answer"].lower()
        outcomes.append(
            ExampleOutcome(
                position=result.position,
                inputs=result.inputs,
                expected=result.expected,
                accepted=result.accepted,
                prediction={"answer": answer},
                raw_output=f" {answer}",
                score=float(right),
                error_code="",
                error_message="",
                latency_ms=1.0,
                input_tokens=5,
                output_tokens=1,
            )
        )
    return outcomes


def test_a_finished_run_from_outcomes_computed_elsewhere(make_evaluation, qa_version):
    baseline = evaluation_score_inline(run=make_evaluation())
    madrid = baseline.results.get(expected__answer="Madrid").position
    run = evaluation_from_outcomes(
        version=qa_version,
        dataset=baseline.dataset,
        split="dev",
        provider=baseline.provider,
        metric="exact_match",
        metric_params={},
        outcomes=_outcomes_of(baseline, {madrid: "Madrid"}),
    )
    assert (run.status, run.done, run.total, run.errors) == (RunStatus.SUCCEEDED, 5, 5, 0)
    assert run.score == pytest.approx(4 / 5)
    assert (run.input_tokens, run.results.count()) == (25, 5)
    assert run.dataset_hash == baseline.dataset_hash
    recorded = VersionScore.objects.get(reference=f"evaluation run {run.pk}")
    assert recorded.score == pytest.approx(0.8)
    with pytest.raises(InvalidEvaluation):
        evaluation_from_outcomes(
            version=qa_version,
            dataset=baseline.dataset,
            split="dev",
            provider=baseline.provider,
            metric="exact_match",
            metric_params={},
            outcomes=[],
        )


def test_comparing_two_runs_on_the_same_data(make_evaluation, qa_version):
    a = evaluation_score_inline(run=make_evaluation())
    positions = {r.expected["answer"]: r.position for r in a.results.all()}
    b = evaluation_from_outcomes(
        version=qa_version,
        dataset=a.dataset,
        split="dev",
        provider=a.provider,
        metric="exact_match",
        metric_params={},
        outcomes=_outcomes_of(
            a,
            {
                positions["Madrid"]: "Madrid",
                positions["paris"]: "Lyon",
                positions["Tokyo"]: "Kyoto",
            },
        ),
    )
    comparison = evaluation_compare(a=a, b=b)
    assert (comparison.compared, comparison.better, comparison.worse) == (5, 1, 1)
    assert comparison.differences_total == 3
    changes = {d.expected["answer"]: d.change for d in comparison.differences}
    assert changes == {"Madrid": "better", "paris": "worse", "Tokyo": "same"}
    madrid = next(d for d in comparison.differences if d.expected["answer"] == "Madrid")
    assert (madrid.a_prediction, madrid.a_score) == ({"answer": "Paris"}, 0.0)
    assert (madrid.b_prediction, madrid.b_score) == ({"answer": "Madrid"}, 1.0)
    assert [d.position for d in comparison.differences] == sorted(
        d.position for d in comparison.differences
    )
    assert len(evaluation_compare(a=a, b=b, limit=1).differences) == 1


def test_runs_on_different_data_are_not_comparable(make_evaluation, make_dataset):
    a = make_evaluation()
    other = make_evaluation(split="train")
    with pytest.raises(EvaluationsNotComparable, match="did not run on the same data"):
        evaluation_compare(a=a, b=other)
    elsewhere = make_evaluation(dataset=make_dataset("copy"))
    with pytest.raises(EvaluationsNotComparable):
        evaluation_compare(a=a, b=elsewhere)


def test_progress_while_running_and_at_the_end(make_evaluation, clock):
    run = make_evaluation()
    assert evaluation_progress(run, now=clock) == {
        "done": 0,
        "total": 5,
        "errors": 0,
        "percent": 0.0,
        "elapsed_s": None,
        "eta_s": None,
    }
    lifecycle.run_claim(model=EvaluationRun, run_id=run.pk, now=clock)
    EvaluationRun.objects.filter(pk=run.pk).update(done=2, errors=1)
    run.refresh_from_db()
    clock.advance(10)
    assert evaluation_progress(run, now=clock) == {
        "done": 2,
        "total": 5,
        "errors": 1,
        "percent": 40.0,
        "elapsed_s": 10.0,
        "eta_s": 15.0,
    }


# Score summaries ----------------------------------------------------------------------------


def test_zero_one_scores_get_wilsons_interval():
    mean, low, high = score_summary([1.0, 1.0, 1.0, 0.0, 0.0])
    assert (mean, round(low, 4), round(high, 4)) == (0.6, 0.2307, 0.8824)
    mean, low, high = score_summary([0.0] * 10)
    assert (mean, low, round(high, 4)) == (0.0, 0.0, 0.2775)
    mean, low, high = score_summary([True] * 4)
    assert (mean, round(low, 4), high) == (1.0, 0.5101, 1.0)


def test_fractional_scores_get_a_t_interval_clipped_to_the_unit_range():
    mean, low, high = score_summary([0.5, 0.6, 0.7])
    assert (round(mean, 4), round(low, 4), round(high, 4)) == (0.6, 0.3516, 0.8484)
    assert score_summary([0.5, 0.5, 1.0, 0.0])[1:] == (0.0, 1.0)
    assert score_summary([0.25]) == (0.25, 0.0, 1.0)
    with pytest.raises(ValueError):
        score_summary([])
