"""The evaluation commands: evaluations_evaluate, evaluations_compare,
evaluations_install_schedules."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_q.models import Schedule

from evaluations.models import EvaluationRun, RunStatus
from evaluations.services.evaluate import evaluation_from_outcomes, evaluation_score_inline
from registry.models import VersionScore
from tests.evaluations.test_evaluate_service import _outcomes_of


def _call(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_evaluating_here_prints_progress_and_the_score(quiz_dataset, scripted_provider):
    output = _call("evaluations_evaluate", "qa", "--dataset", "quiz", "--here")
    run = EvaluationRun.objects.get()
    assert (run.status, run.task_id) == (RunStatus.SUCCEEDED, "")
    assert f"Evaluation run {run.pk}: qa v1 on quiz ({run.dataset_hash[:12]}) dev" in output
    assert "5 examples, provider scripted, metric exact_match" in output
    assert f"run {run.pk}: succeeded, 5/5 (100%), 0 error(s)" in output
    assert "Score 0.600 (95% CI 0.231-0.882) on 5 examples" in output
    assert VersionScore.objects.get().reference == f"evaluation run {run.pk}"


def test_every_option(quiz_dataset, scripted_provider):
    output = _call(
        "evaluations_evaluate",
        "qa",
        "--dataset",
        "quiz",
        "--split",
        "train",
        "--provider",
        "scripted",
        "--metric",
        "answer_contains",
        "--version",
        "1",
        "--params",
        '{"threshold": 0.5}',
        "--here",
    )
    run = EvaluationRun.objects.get()
    assert (run.split, run.metric, run.metric_params) == (
        "train",
        "answer_contains",
        {"threshold": 0.5},
    )
    assert "Score 0.667" in output


@pytest.mark.django_db(transaction=True)
def test_without_here_the_workers_run_it_and_the_command_follows(quiz_dataset, scripted_provider):
    # The test settings run django-q2 tasks synchronously: the worker runs at the commit.
    output = _call("evaluations_evaluate", "qa", "--dataset", "quiz")
    run = EvaluationRun.objects.get()
    assert run.task_id and run.status == RunStatus.SUCCEEDED
    assert "Score 0.600" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--dataset", "quiz"], "No signature named 'nope'"),
        (["qa", "--dataset", "nope"], "has no dataset 'nope'"),
        (["qa", "--dataset", "quiz", "--provider", "nope"], "No provider named 'nope'"),
        (["qa", "--dataset", "quiz", "--version", "7"], "has no version 7"),
        (["qa", "--dataset", "quiz", "--metric", "nope"], "not a built-in metric"),
        (["qa", "--dataset", "quiz", "--params", "{"], "--params is not JSON"),
        (["qa", "--dataset", "quiz", "--params", "[1]"], "--params must be a JSON object"),
    ],
)
def test_bad_input_is_a_command_error(quiz_dataset, scripted_provider, args, message):
    with pytest.raises(CommandError, match=message):
        _call("evaluations_evaluate", *args, "--here")
    assert not EvaluationRun.objects.exists()


def test_a_run_that_fails_is_a_command_error(quiz_dataset, broken_provider):
    with pytest.raises(CommandError, match="failed: examples_failed: Every example failed"):
        _call("evaluations_evaluate", "qa", "--dataset", "quiz", "--provider", "broken", "--here")


def test_comparing_two_runs(make_evaluation, qa_version):
    a = evaluation_score_inline(run=make_evaluation())
    madrid = a.results.get(expected__answer="Madrid").position
    b = evaluation_from_outcomes(
        version=qa_version,
        dataset=a.dataset,
        split="dev",
        provider=a.provider,
        metric="exact_match",
        metric_params={},
        outcomes=_outcomes_of(a, {madrid: "Madrid"}),
    )
    output = _call("evaluations_compare", str(a.pk), str(b.pk))
    assert f"a: run {a.pk} qa v1 on scripted, exact_match, succeeded: 0.600" in output
    assert f"b: run {b.pk} qa v1 on scripted, exact_match, succeeded: 0.800" in output
    assert "5 examples scored by both; they differ on 1: b better on 1, worse on 0." in output
    assert f'#{madrid} better: {{"question": "What is the capital of Spain?' in output
    assert 'a {"answer": "Paris"} (0.0)' in output and 'b {"answer": "Madrid"} (1.0)' in output
    assert "more (--limit)" in _call("evaluations_compare", str(a.pk), str(b.pk), "--limit", "0")


def test_comparing_bad_runs_is_a_command_error(make_evaluation):
    a, other = make_evaluation(), make_evaluation(split="train")
    with pytest.raises(CommandError, match="did not run on the same data"):
        _call("evaluations_compare", str(a.pk), str(other.pk))
    with pytest.raises(CommandError, match="No evaluation run x"):
        _call("evaluations_compare", str(a.pk), "x")
    with pytest.raises(CommandError, match="--limit must be 0 or more"):
        _call("evaluations_compare", str(a.pk), str(a.pk), "--limit", "-1")


def test_installing_the_schedule_is_idempotent(db, settings):
    settings.EXECUTIONS_REAPER_EVERY_MINUTES = 3
    assert "installed" in _call("evaluations_install_schedules")
    assert "up to date" in _call("evaluations_install_schedules")
    schedule = Schedule.objects.get(func="evaluations.tasks.runs_reap_stale")
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats, schedule.cluster) == (
        Schedule.MINUTES,
        3,
        -1,
        None,
    )
