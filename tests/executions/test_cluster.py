"""Executions end to end on real django-q2 clusters running on the test database."""

import os
import signal

import pytest
from django.core.management import call_command
from django_q.models import Success
from django_q.tasks import async_task

from executions.models import Execution
from tests.executions.conftest import EXECUTE
from tests.support.engines import SLOW_ENGINE
from tests.support.factories import ProviderFactory
from tests.support.faults import wait_for
from tests.support.specs import QA_LEVEL_INPUTS


def _finished(execution_id) -> Execution | None:
    execution = Execution.objects.get(id=execution_id)
    return execution if execution.is_finished else None


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_the_api_runs_executions_on_a_real_cluster(
    qa_version, echo_provider, api_client, start_cluster
):
    start_cluster()
    response = api_client.post(
        EXECUTE,
        {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo", "timeout_s": 120},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == {"answer": "Paris"}

    accepted = api_client.post(
        EXECUTE,
        {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo", "mode": "async"},
        format="json",
    )
    assert accepted.status_code == 202
    execution = wait_for(
        lambda: _finished(accepted.json()["id"]), timeout=120, what="the async execution"
    )
    assert execution.status == "succeeded"
    assert execution.task_id
    assert api_client.get(accepted["Location"]).json()["status"] == "succeeded"


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_a_task_delivered_twice_runs_once_on_a_real_cluster(
    qa_version, echo_provider, api_client, start_cluster
):
    created = api_client.post(
        EXECUTE,
        {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo", "mode": "async"},
        format="json",
    ).json()
    # The broker delivers the same task a second time (as after a retry timeout).
    async_task("executions.tasks.execution_run", created["id"])
    start_cluster()  # two workers take both deliveries at once
    wait_for(lambda: Success.objects.count() == 2, timeout=120, what="both deliveries")
    results = sorted(Success.objects.values_list("result", flat=True))
    assert results[0].startswith(created["id"])
    assert results[1].startswith("not queued any more")
    execution = Execution.objects.get(id=created["id"])
    assert (execution.status, execution.attempts) == ("succeeded", 1)
    assert execution.provider_attempts.count() == 1


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_task_is_recovered_by_the_scheduled_reaper(
    qa_version, api_client, start_cluster, tmp_path
):
    release = tmp_path / "release"
    ProviderFactory(name="slow", engine_path=SLOW_ENGINE, model=str(release))
    call_command("executions_install_schedules", stdout=open(os.devnull, "w"))  # noqa: SIM115
    start_cluster(EXECUTIONS_HEARTBEAT_S="0.2", EXECUTIONS_STALE_AFTER_S="2")
    created = api_client.post(
        EXECUTE,
        {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "slow", "mode": "async"},
        format="json",
    ).json()

    started = release.with_suffix(".started")
    wait_for(started.exists, timeout=120, what="the worker to start the call")
    execution = Execution.objects.get(id=created["id"])
    assert execution.status == "running"
    beat = execution.heartbeat_at
    wait_for(
        lambda: Execution.objects.get(id=created["id"]).heartbeat_at > beat,
        timeout=30,
        what="a heartbeat",
    )

    os.kill(int(started.read_text()), signal.SIGKILL)
    started.unlink()
    release.touch()  # the next run answers at once

    # The reaper schedule (every minute) finds the stale row, requeues it, and it runs again.
    execution = wait_for(lambda: _finished(created["id"]), timeout=200, what="the recovery")
    assert (execution.status, execution.attempts) == ("succeeded", 2)
    assert execution.outputs == {"answer": "Paris"}
    assert list(execution.provider_attempts.values_list("run", "outcome")) == [(2, "succeeded")]
    # The reaper ran (it recovered the row), and its routine successes are not kept.
    assert not Success.objects.filter(func="executions.tasks.execution_reap_stale").exists()


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_one_inference_worker_runs_queued_local_executions_together(
    qa_version,
    api_client,
    start_cluster,
    tiny_model_dir,
):
    ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir), max_tokens=4)
    ids = [
        api_client.post(
            EXECUTE,
            {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "tiny", "mode": "async"},
            format="json",
        ).json()["id"]
        for _ in range(4)
    ]
    start_cluster("inference")
    wait_for(lambda: Success.objects.count() == 4, timeout=200, what="the four tasks")
    # The first task handed all four to the batch (and returned); the other three found them
    # claimed.
    results = list(Success.objects.values_list("result", flat=True))
    together = [result for result in results if not result.startswith("not queued")]
    assert len(together) == 1
    assert together[0].startswith("running in the batch")
    assert all(execution_id in together[0] for execution_id in ids)
    wait_for(
        lambda: not Execution.objects.exclude(status="succeeded").exists(),
        timeout=200,
        what="the four executions",
    )
    statuses = set(Execution.objects.values_list("status", flat=True))
    assert statuses == {"succeeded"}, list(Execution.objects.values("error_message"))
