"""A real django-q2 cluster process, on the test database, runs what the web side enqueues."""

import time

import pytest
from django_q.models import Success
from django_q.tasks import async_task


def _wait_for_success(task_id: str, timeout: float = 60.0) -> Success:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = Success.objects.filter(id=task_id).first()
        if task is not None:
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish in {timeout}s")


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cluster_name", [None, "inference"])
def test_a_real_cluster_runs_an_enqueued_task(start_cluster, cluster_name):
    start_cluster(cluster_name)
    options = {"cluster": cluster_name} if cluster_name else {}
    task_id = async_task("math.hypot", 3, 4, q_options=options)
    assert _wait_for_success(task_id).result == 5.0
