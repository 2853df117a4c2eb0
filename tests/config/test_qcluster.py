"""A real django-q2 cluster process, on the test database, runs what the web side enqueues."""

import os
import subprocess
import time

import pytest
import redis
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


def _redis_url() -> str | None:
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        return None
    return url


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_redis_broker_and_cache_when_redis_url_is_set(
    start_cluster, python, repo_root, subprocess_env
):
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis server reachable (set TEST_REDIS_URL)")
    start_cluster(REDIS_URL=url)
    # django-q2 picks its broker at import, so the enqueueing side runs in a process of its own.
    script = (
        "from django.core.cache import caches; from django_q.tasks import async_task, result;"
        "cache = caches['default']; cache.set('probe', 42);"
        "print(type(cache).__name__, cache.get('probe'));"
        "print(result(async_task('math.hypot', 3, 4), wait=60000))"
    )
    completed = subprocess.run(
        [python, "manage.py", "shell", "--no-imports", "-c", script],
        cwd=repo_root,
        env=subprocess_env | {"REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["RedisCache", "42", "5.0"]
