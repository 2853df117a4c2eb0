"""The health probes: liveness, and readiness with each of its checks, at both paths."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring import health
from providers.models import Provider
from tests.support.factories import ProviderFactory
from tests.support.service_processes import report_process

READY_PATHS = ["/health/ready", "/readyz"]
# From another host, with credentials that do not exist: probes look at neither.
ANONYMOUS = {"REMOTE_ADDR": "203.0.113.7", "HTTP_AUTHORIZATION": "Api-Key no.such-key"}


@pytest.fixture(autouse=True)
def _forget_the_migration_check(monkeypatch):
    # The positive answer is kept per process; each test judges its own database.
    monkeypatch.setattr(health, "_migrations_applied", False)


@pytest.fixture
def tasks_worker(db):
    return report_process(cluster="default")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/health/live", "/healthz"])
def test_liveness_needs_no_authentication(client, path):
    response = client.get(path, **ANONYMOUS)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", READY_PATHS)
def test_ready_once_a_worker_of_the_tasks_cluster_reported(client, tasks_worker, path):
    response = client.get(path, **ANONYMOUS)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "checks": {
            "database": True,
            "migrations": True,
            "cluster_tasks": True,
            # No provider yet: the admin console to add one must stay in rotation.
            "default_provider": True,
        },
    }


@pytest.mark.django_db
@pytest.mark.parametrize("path", READY_PATHS)
def test_not_ready_without_a_worker_heartbeat(client, path):
    # A cluster's main process alone runs no task.
    report_process(role="cluster", cluster="default")
    response = client.get(path, **ANONYMOUS)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["cluster_tasks"] is False
    assert list(body["failing"]) == ["cluster_tasks"]
    assert "'default'" in body["failing"]["cluster_tasks"]


@pytest.mark.django_db
def test_a_heartbeat_older_than_the_stale_threshold_is_not_ready(client, settings):
    settings.MONITORING_PROCESS_STALE_AFTER_S = 30
    report_process(cluster="default", at=timezone.now() - timedelta(seconds=31))
    assert client.get("/readyz").status_code == 503
    report_process(cluster="default", at=timezone.now() - timedelta(seconds=25))
    assert client.get("/readyz").status_code == 200


def _model_dir(tmp_path, *, weights: bool):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    if weights:
        (directory / "model.safetensors").write_bytes(b"")
    return directory


def test_a_local_default_provider_needs_the_inference_cluster_and_its_weights(
    client, tasks_worker, tmp_path
):
    model = _model_dir(tmp_path, weights=False)
    ProviderFactory(name="local-default", kind=Provider.Kind.MLX, model=str(model))
    body = client.get("/readyz").json()
    assert sorted(body["failing"]) == ["cluster_inference", "default_provider"]
    assert "Q_CLUSTER_NAME=inference" in body["failing"]["cluster_inference"]
    assert "no weights" in body["failing"]["default_provider"]

    report_process(cluster="inference")
    (model / "model.safetensors").write_bytes(b"")
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["cluster_inference"] is True


def test_a_model_directory_removed_after_configuration_is_not_ready(client, tasks_worker, tmp_path):
    model = _model_dir(tmp_path, weights=True)
    ProviderFactory(name="local-default", kind=Provider.Kind.MLX, model=str(model))
    report_process(cluster="inference")
    (model / "config.json").unlink()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "config.json" in response.json()["failing"]["default_provider"]


def test_a_remote_default_provider_must_be_configured_and_no_key_is_shown(
    client, tasks_worker, monkeypatch
):
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_REMOTE", "sk-secret-value-123456")
    ProviderFactory(
        name="remote", kind=Provider.Kind.OPENAI, api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_REMOTE"
    )
    monkeypatch.delenv("DSPY_TOOLKIT_PROVIDER_KEY_REMOTE")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "DSPY_TOOLKIT_PROVIDER_KEY_REMOTE" in response.json()["failing"]["default_provider"]

    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_REMOTE", "sk-secret-value-123456")
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert b"sk-secret" not in response.content


def test_unapplied_migrations_are_not_ready(client, tasks_worker, settings):
    # The monitoring app as a release would ship it: one migration more than is applied.
    settings.MIGRATION_MODULES = {"monitoring": "tests.monitoring.pending_migrations"}
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert list(body["failing"]) == ["migrations"]
    assert "1 migration(s) not applied" in body["failing"]["migrations"]
    # The other checks wait for the schema they read.
    assert "cluster_tasks" not in body["checks"]


@pytest.mark.django_db
def test_schema_and_docs_are_public(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_api_docs_need_no_cdn(client):
    # The docs page loads Swagger UI from this installation, so it works without the internet.
    page = client.get("/api/docs/").content.decode()
    assert "cdn" not in page.lower()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
