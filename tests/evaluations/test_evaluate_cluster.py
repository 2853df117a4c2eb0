"""Evaluation runs through real django-q2 clusters on the test database: a deterministic
provider in the default cluster, and the real default model in the inference cluster."""

import json
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import transaction

from evaluations.models import EvaluationRun, RunStatus
from evaluations.services.evaluate import evaluation_create
from monitoring.models import ServiceProcess
from providers.selectors import DEFAULT_PROVIDER_NAME, provider_get
from registry.models import VersionScore
from tests.evaluations.conftest import QUIZ_DEV_RIGHT, QUIZ_DEV_TOTAL, dataset_make
from tests.support.factories import SignatureVersionFactory
from tests.support.faults import wait_for

REPO = Path(__file__).resolve().parents[2]
SIMPLE_QA = {
    "instructions": "Answer the question with a short factual answer.",
    "input_fields": [{"name": "question", "type": "str", "description": "The question."}],
    "output_fields": [{"name": "answer", "type": "str", "description": "The answer."}],
    "module_kind": "Predict",
}


def _finished(run_id: int) -> EvaluationRun | None:
    run = EvaluationRun.objects.get(pk=run_id)
    return run if run.finished else None


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_a_worker_of_a_real_cluster_runs_an_evaluation(
    qa_version, quiz_dataset, scripted_provider, start_cluster, settings, tmp_path
):
    with transaction.atomic():
        run = evaluation_create(
            version=qa_version,
            dataset=quiz_dataset,
            split="dev",
            provider=scripted_provider,
            metric="exact_match",
        )
    run.refresh_from_db()
    assert run.task_id and run.status == RunStatus.QUEUED  # in the broker, not run inline
    log = tmp_path / "cluster.log"
    with log.open("w") as output:
        # The worker scores with its own thread pool (the test process's setting is 1).
        start_cluster(log=output, EVALUATIONS_CONCURRENCY="4")
    run = wait_for(lambda: _finished(run.pk), timeout=120, what="the evaluation run")
    assert run.status == RunStatus.SUCCEEDED, log.read_text()[-3000:]
    assert (run.done, run.errors, run.attempts) == (QUIZ_DEV_TOTAL, 0, 1)
    assert run.score == pytest.approx(QUIZ_DEV_RIGHT / QUIZ_DEV_TOTAL)
    assert sorted(run.results.values_list("position", flat=True)) == list(range(4, 9))
    assert VersionScore.objects.filter(reference=f"evaluation run {run.pk}").exists()


def _qa_like(count: int) -> list[tuple[str, dict, dict, dict]]:
    """`count` short factual questions from the starter dataset of `qa` (repeated when it
    holds fewer), all in one split."""
    rows = [
        json.loads(line)
        for line in (REPO / "registry/library_data/qa.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return [
        (
            "dev",
            {"question": row["question"]},
            {"answer": row["answer"]},
            row.get("accepted") or {},
        )
        for row in (rows * (count // len(rows) + 1))[:count]
    ]


@pytest.mark.slow_model
@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_100_examples_on_the_default_model_through_the_inference_cluster(
    default_model_dir, start_cluster, tmp_path
):
    call_command("providers_install_default_model", stdout=StringIO())
    provider = provider_get(name=DEFAULT_PROVIDER_NAME)
    version = SignatureVersionFactory(signature__name="capitals", spec=SIMPLE_QA)
    dataset = dataset_make(version=version, name="qa_like", examples=_qa_like(100))
    log = tmp_path / "inference.log"
    with log.open("w") as output:
        start_cluster("inference", log=output, MONITORING_PROCESS_HEARTBEAT_S="0.5")
    # The clock starts once the worker holds the model (it warms up when it starts).
    wait_for(
        lambda: (
            ServiceProcess.objects.filter(role="worker", cluster="inference")
            .exclude(loaded_models=[])
            .exists()
        ),
        timeout=180,
        what="the inference worker to load the model",
        every=0.5,
    )
    started = time.monotonic()
    with transaction.atomic():
        run = evaluation_create(
            version=version,
            dataset=dataset,
            split="dev",
            provider=provider,
            metric="answer_contains",
        )
    run = wait_for(lambda: _finished(run.pk), timeout=600, what="the evaluation run", every=0.5)
    wall_s = time.monotonic() - started
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, log.read_text()[-3000:])
    assert run.done == 100
    worker_s = (run.finished_at - run.started_at).total_seconds()
    print(
        f"\n100 examples on {provider.name} through the inference cluster: {wall_s:.1f} s from "
        f"enqueue to finish ({worker_s:.1f} s in the worker), answer_contains "
        f"{run.score:.3f} [{run.ci_low:.3f}, {run.ci_high:.3f}], {run.errors} error(s), "
        f"{run.input_tokens} input / {run.output_tokens} output tokens"
    )
