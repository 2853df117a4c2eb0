"""The hot path without polling, on a real django-q2 cluster: a sync request is woken by its
execution's finish, and an idle cluster by the task's arrival (`core.notify`)."""

import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import selectors
from executions.models import Execution
from tests.executions.conftest import EXECUTE
from tests.support.engines import SLOW_ENGINE
from tests.support.factories import ProviderFactory
from tests.support.faults import wait_for
from tests.support.specs import QA_LEVEL_INPUTS


def _reads_of_the_wait(queries: list[dict]) -> list[str]:
    # The wait's read: the executions by id (`in_bulk`), one query per look.
    return [
        query["sql"]
        for query in queries
        if query["sql"].startswith("SELECT")
        and 'FROM "executions_execution"' in query["sql"]
        and '"executions_execution"."id" IN (' in query["sql"]
    ]


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_a_sync_request_gets_its_result_without_polling(
    qa_version, api_client, start_cluster, tmp_path, monkeypatch
):
    # Longer than the request's own timeout: an answer can only come from the notification.
    monkeypatch.setattr(selectors, "_NOTIFIED_FALLBACK_S", 600.0)
    release = tmp_path / "release"
    ProviderFactory(name="slow", engine_path=SLOW_ENGINE, model=str(release))
    start_cluster()
    answer: dict = {}

    def request() -> None:
        try:
            with CaptureQueriesContext(connection) as queries:
                answer["response"] = api_client.post(
                    EXECUTE,
                    {
                        "signature": "qa",
                        "inputs": QA_LEVEL_INPUTS,
                        "provider": "slow",
                        "timeout_s": 60,
                    },
                    format="json",
                )
            answer["reads"] = _reads_of_the_wait(queries.captured_queries)
        finally:
            connection.close()

    waiting = threading.Thread(target=request)
    waiting.start()
    wait_for(release.with_suffix(".started").exists, timeout=120, what="the call to start")
    # Long enough for a polling wait to read the row a dozen times (its first pauses are 10 ms).
    time.sleep(1.0)
    release.touch()
    waiting.join(timeout=90)
    assert not waiting.is_alive()
    response = answer["response"]
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "succeeded"
    # Once before waiting, once when woken.
    assert len(answer["reads"]) == 2, answer["reads"]


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_an_idle_cluster_takes_a_task_when_it_arrives_not_at_its_next_look(
    qa_version, echo_provider, api_client, start_cluster
):
    # An idle cluster looks at its queue once a minute by itself here.
    cluster = start_cluster(Q_IDLE_LOOK_S="60")
    warm_up = api_client.post(
        EXECUTE,
        {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo", "mode": "async"},
        format="json",
    ).json()
    wait_for(
        lambda: Execution.objects.get(id=warm_up["id"]).is_finished,
        timeout=120,
        what="the cluster to start and run a first execution",
    )
    # The cluster is idle now, waiting for a notification (or its next look in a minute).
    created = api_client.post(
        EXECUTE,
        {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo", "mode": "async"},
        format="json",
    ).json()
    execution = wait_for(
        lambda: Execution.objects.filter(id=created["id"], status="succeeded").first(),
        timeout=30,
        what="the notified cluster to run the execution",
    )
    assert execution.outputs
    # A graceful stop would wait for the next look too (a minute): this one is killed.
    cluster.kill()
