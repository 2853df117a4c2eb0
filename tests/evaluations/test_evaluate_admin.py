"""The admin of evaluation runs: list, detail with progress and results, cancel, compare, new."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client
from django.urls import reverse

from evaluations.models import EvaluationRun, RunStatus
from evaluations.services.evaluate import evaluation_from_outcomes, evaluation_score_inline
from tests.evaluations.test_evaluate_service import _outcomes_of
from tests.support.factories import StaffUserFactory

CHANGELIST = reverse("admin:evaluations_evaluationrun_changelist")
NEW = reverse("admin:evaluations_evaluationrun_new")


def _change(run) -> str:
    return reverse("admin:evaluations_evaluationrun_change", args=[run.pk])


def _staff_client(*perms: str) -> Client:
    client = Client()
    client.force_login(StaffUserFactory(username="viewer", perms=perms))
    return client


@pytest.fixture
def finished_run(make_evaluation):
    return evaluation_score_inline(run=make_evaluation())


def test_the_list_shows_status_score_and_progress(admin_client, finished_run, make_evaluation):
    make_evaluation()
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    text = page.content.decode()
    assert "0.600 [0.231, 0.882]" in text
    assert "5/5" in text and "0/5" in text
    assert "quiz (" in text and "exact_match" in text
    assert NEW in text  # the superuser may start one


def test_the_list_has_bounded_queries(admin_client, make_evaluation, django_assert_max_num_queries):
    for _ in range(5):
        make_evaluation()
    with django_assert_max_num_queries(12):
        assert admin_client.get(CHANGELIST).status_code == 200


def test_the_detail_page_shows_the_results_wrong_ones_filterable(admin_client, finished_run):
    page = admin_client.get(_change(finished_run))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Results (5)" in text
    assert 'progress value="5" max="5"' in text
    assert 'http-equiv="refresh"' not in text  # finished: no refreshing
    assert "Cancel this run" not in text
    wrong = admin_client.get(_change(finished_run), {"show": "wrong"}).content.decode()
    assert "Results (2)" in wrong and "Madrid" in wrong and "Tokyo" in wrong
    assert "Where is the Louvre" not in wrong
    # An unknown filter shows everything rather than failing.
    assert "Results (5)" in admin_client.get(_change(finished_run), {"show": "x"}).content.decode()


def test_the_detail_page_of_a_running_run_refreshes_and_offers_cancel(
    admin_client, make_evaluation
):
    run = make_evaluation()
    EvaluationRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    text = admin_client.get(_change(run)).content.decode()
    assert 'http-equiv="refresh" content="5"' in text
    assert "Cancel this run" in text


def test_results_are_paginated(admin_client, qa_version, scripted_provider, make_dataset):
    from evaluations.services.evaluate import evaluation_create

    rows = [("dev", f"Question {n}?", "Paris", []) for n in range(60)]
    run = evaluation_create(
        version=qa_version,
        dataset=make_dataset("big", rows=rows),
        split="dev",
        provider=scripted_provider,
        metric="exact_match",
        enqueue=False,
    )
    evaluation_score_inline(run=run)
    first = admin_client.get(_change(run)).content.decode()
    assert "page 1 of 2" in first and "Question 49?" in first and "Question 50?" not in first
    second = admin_client.get(_change(run), {"page": 2}).content.decode()
    assert "Question 50?" in second


def test_an_unknown_run_page(admin_client):
    response = admin_client.get(reverse("admin:evaluations_evaluationrun_change", args=[424242]))
    assert response.status_code == 302  # the stock "does not exist" redirect


def test_cancelling_from_the_page(admin_client, make_evaluation):
    run = make_evaluation()
    url = reverse("admin:evaluations_evaluationrun_cancel", args=[run.pk])
    response = admin_client.post(url)
    assert response.status_code == 302 and response["Location"] == _change(run)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert admin_client.get(url).status_code == 403  # only a POST cancels


def test_cancelling_needs_the_change_permission(make_evaluation):
    run = make_evaluation()
    viewer = _staff_client("view_evaluationrun")
    page = viewer.get(_change(run))
    assert page.status_code == 200 and "Cancel this run" not in page.content.decode()
    url = reverse("admin:evaluations_evaluationrun_cancel", args=[run.pk])
    assert viewer.post(url).status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_the_cancel_action(admin_client, make_evaluation, finished_run):
    queued, running = make_evaluation(), make_evaluation()
    EvaluationRun.objects.filter(pk=running.pk).update(status=RunStatus.RUNNING)
    response = admin_client.post(
        CHANGELIST,
        {
            "action": "cancel_selected",
            ACTION_CHECKBOX_NAME: [queued.pk, running.pk, finished_run.pk],
        },
    )
    assert response.status_code == 302
    statuses = dict(EvaluationRun.objects.values_list("pk", "status"))
    assert statuses[queued.pk] == RunStatus.CANCELLED
    assert statuses[finished_run.pk] == RunStatus.SUCCEEDED
    assert EvaluationRun.objects.get(pk=running.pk).cancel_requested


def test_comparing_two_runs(admin_client, finished_run, qa_version):
    madrid = finished_run.results.get(expected__answer="Madrid").position
    other = evaluation_from_outcomes(
        version=qa_version,
        dataset=finished_run.dataset,
        split="dev",
        provider=finished_run.provider,
        metric="exact_match",
        metric_params={},
        outcomes=_outcomes_of(finished_run, {madrid: "Madrid"}),
    )
    detail = admin_client.get(_change(finished_run)).content.decode()
    assert f'<option value="{other.pk}">' in detail
    url = reverse("admin:evaluations_evaluationrun_compare", args=[finished_run.pk])
    assert admin_client.get(url).status_code == 200
    page = admin_client.get(url, {"b": other.pk})
    text = page.content.decode()
    assert "0.600 [0.231, 0.882]" in text and "0.800" in text
    assert "they differ on 1: b is better on 1, worse on 0" in text
    assert "Madrid" in text and 'class="change-better"' in text


def test_comparing_with_a_run_on_other_data_says_why(admin_client, finished_run, make_evaluation):
    other = make_evaluation(split="train")
    url = reverse("admin:evaluations_evaluationrun_compare", args=[finished_run.pk])
    text = admin_client.get(url, {"b": other.pk}, follow=True).content.decode()
    assert "did not run on the same data" in text
    assert "No other run used the same data" in text


def test_starting_a_run_from_the_form(admin_client, quiz_dataset, scripted_provider):
    page = admin_client.get(NEW, {"signature": "qa", "dataset": "quiz"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "answer_contains" in text and 'value="quiz"' in text
    response = admin_client.post(
        NEW,
        {
            "signature": "qa",
            "version": "1",
            "dataset": "quiz",
            "split": "dev",
            "provider": "scripted",
            "metric": "exact_match",
            "metric_params": '{"threshold": 0.5}',
        },
    )
    run = EvaluationRun.objects.get()
    assert response.status_code == 302 and response["Location"] == _change(run)
    assert (run.split, run.metric_params, run.created_by.username) == (
        "dev",
        {"threshold": 0.5},
        "admin",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset": "dev_only", "split": "train"}, "no examples in its train split"),
        ({"dataset": "nope"}, "has no dataset"),
        ({"version": "9"}, "has no version 9"),
        ({"metric": "nope"}, "not a built-in metric"),
        ({"metric_params": "[1]"}, "Enter a JSON object."),
        ({"metric_params": "{"}, "Enter a valid JSON."),
    ],
)
def test_the_form_shows_what_is_wrong(
    admin_client, quiz_dataset, make_dataset, scripted_provider, change, message
):
    make_dataset("dev_only", rows=[("dev", "Q?", "A", [])])
    data = {
        "signature": "qa",
        "dataset": "quiz",
        "split": "dev",
        "provider": "scripted",
        "metric": "exact_match",
    } | change
    response = admin_client.post(NEW, data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not EvaluationRun.objects.exists()


def test_starting_a_run_needs_the_add_permission(quiz_dataset):
    viewer = _staff_client("view_evaluationrun")
    assert viewer.get(NEW).status_code == 403
    assert NEW not in viewer.get(CHANGELIST).content.decode()
