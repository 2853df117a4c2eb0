"""The service's processes reporting themselves, and the resources page that shows them."""

import sys
import time
import types
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.tasks import async_task, result

from monitoring import processes
from monitoring.models import ServiceProcess
from monitoring.processes import ProcessIdentity, process_role, service_process_report
from tests.support.faults import wait_for
from tests.support.service_processes import report_process

RESOURCES = "/admin/monitoring/serviceprocess/"


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_real_clusters_report_their_processes_and_make_the_service_ready(
    start_cluster, client, settings
):
    assert client.get("/readyz").status_code == 503
    tasks = start_cluster(MONITORING_PROCESS_HEARTBEAT_S="0.5")
    inference = start_cluster("inference", MONITORING_PROCESS_HEARTBEAT_S="0.5")

    def reported():
        rows = list(ServiceProcess.objects.all())
        workers = {row.cluster: row for row in rows if row.role == "worker"}
        mains = {row.pid: row for row in rows if row.role == "cluster"}
        return (rows, workers, mains) if len(workers) == 2 and len(mains) == 2 else None

    rows, workers, mains = wait_for(reported, timeout=90, what="both clusters to report")
    assert (mains[tasks.pid].cluster, mains[inference.pid].cluster) == ("default", "inference")
    # Q_WORKERS=2 tasks workers and one inference worker; no row for django-q2's helpers.
    by_cluster = {}
    for row in rows:
        by_cluster.setdefault((row.role, row.cluster), []).append(row)
    assert len(by_cluster["worker", "default"]) == 2
    assert len(by_cluster["worker", "inference"]) == 1
    assert all(row.rss_bytes > 10 * 2**20 for row in rows)
    assert all(row.loaded_models == [] for row in rows)

    beat = workers["default"].heartbeat_at
    wait_for(
        lambda: ServiceProcess.objects.get(pk=workers["default"].pk).heartbeat_at > beat,
        timeout=30,
        what="a second heartbeat",
    )
    assert client.get("/readyz").status_code == 200

    # A stopped cluster stops beating: once its rows are older than the threshold, not ready.
    tasks.terminate()
    tasks.wait(timeout=30)
    settings.MONITORING_PROCESS_STALE_AFTER_S = 1.5
    time.sleep(2)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert list(response.json()["failing"]) == ["cluster_tasks"]


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["manage.py", "qcluster"], {}, ("cluster", "default")),
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, ("web", "")),
        (["manage.py", "runserver"], {}, None),
        (["manage.py", "runserver", "--noreload"], {}, ("web", "")),
        (["manage.py", "migrate"], {}, None),
        (["manage.py", "executions_execute", "qa"], {}, None),
        (["pytest"], {}, None),
    ],
)
def test_only_long_running_service_processes_report(monkeypatch, argv, environ, expected):
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delenv("RUN_MAIN", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert process_role() == expected


def test_a_gunicorn_process_is_a_web_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "gunicorn", types.ModuleType("gunicorn"))
    monkeypatch.setattr(sys, "argv", ["gunicorn", "config.wsgi:application"])
    assert process_role() == ("web", "")


@pytest.mark.django_db
def test_a_task_run_inline_does_not_make_this_process_a_worker():
    # The test settings run tasks inline, which sends django-q2's post_spawn here too. (That
    # a forked worker does report is the real-cluster test's to show.)
    assert result(async_task("math.hypot", 3, 4)) == 5.0
    assert processes._reporter is None
    assert not ServiceProcess.objects.exists()


@pytest.mark.django_db
def test_a_heartbeat_updates_the_row_and_old_rows_are_forgotten():
    now = timezone.now()
    identity = ProcessIdentity(host="h", pid=4242, started_at=now, role="worker", cluster="default")
    service_process_report(identity=identity, now=now, rss_bytes=1, loaded_models=[])
    later = now + timedelta(seconds=10)
    service_process_report(
        identity=identity, now=later, rss_bytes=2, loaded_models=[{"path": "/m"}]
    )
    row = ServiceProcess.objects.get()
    assert (row.heartbeat_at, row.rss_bytes, row.loaded_models) == (later, 2, [{"path": "/m"}])
    # The same pid, reused by a process that started later, is another process.
    reused = ProcessIdentity(host="h", pid=4242, started_at=later, role="web")
    service_process_report(identity=reused, now=later, rss_bytes=3, loaded_models=[])
    assert ServiceProcess.objects.count() == 2
    # A day of silence later, the next beat of any process deletes both.
    report_process(at=later + processes.FORGET_AFTER + timedelta(seconds=1))
    assert ServiceProcess.objects.count() == 1


def test_the_memory_of_this_process_is_measured():
    assert processes.process_rss_bytes() > 10 * 2**20


def test_loaded_models_come_from_the_mlx_runtime(tiny_model_dir):
    from providers.mlx import runtime

    # Earlier tests of this process may have left models loaded, this one among them (the
    # tiny model's directory is the session's): only this model's coming and going counts.
    path = str(tiny_model_dir.resolve())
    runtime.unload_model(model_path=path)
    assert path not in {model["path"] for model in processes.process_loaded_models()}
    runtime.load_model(model_path=path, optimize=False)
    try:
        loaded = {model["path"]: model for model in processes.process_loaded_models()}
        assert loaded[path]["requests_served"] == 0
    finally:
        runtime.unload_model(model_path=path)
    assert path not in {model["path"] for model in processes.process_loaded_models()}


def _page(admin_client):
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(RESOURCES)
    assert response.status_code == 200
    return response.content.decode(), len(queries)


@pytest.mark.django_db
def test_the_resources_page_shows_each_process_in_bounded_queries(admin_client, settings):
    settings.MONITORING_PROCESS_STALE_AFTER_S = 60
    report_process(role="web", rss_bytes=150 * 2**20)
    report_process(
        cluster="inference", loaded_models=[{"path": "/var/models/smol", "requests_served": 3}]
    )
    report_process(cluster="default", at=timezone.now() - timedelta(minutes=5))
    page, few = _page(admin_client)
    assert "150.0 MB" in page
    assert "smol (3 served)" in page
    assert page.count(">alive<") == 2
    assert page.count(">gone<") == 1
    assert "django-q2 clusters" in page and "No django-q2 cluster is running" in page
    assert "Queues" in page
    for _ in range(10):
        report_process(cluster="default")
    _, many = _page(admin_client)
    assert many == few


@pytest.mark.django_db
def test_the_resources_page_is_read_only_and_needs_a_login(admin_client, client):
    report_process()
    assert client.get(RESOURCES).status_code == 302
    row = ServiceProcess.objects.get()
    assert admin_client.post(f"{RESOURCES}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get(f"{RESOURCES}add/").status_code == 403
    assert ServiceProcess.objects.count() == 1
