"""Local providers name the inference cluster that serves them (`Provider.serving_cluster`):
their executions are routed, bounded and warmed up there only, so that a machine with an
accelerator loads the big model and a CPU machine the small one."""

import runpy
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django_q.models import OrmQ, Task
from django_q.signing import SignedPackage

from executions.admission import execution_admit
from executions.exceptions import QueueFull
from executions.models import Execution
from executions.services.create import execution_create
from monitoring.models import ServiceProcess
from providers.calls import provider_route, providers_routed_to, providers_routed_with
from providers.mlx.runtime import loaded_models, unload_all
from providers.models import Provider
from providers.signals import warm_up_local_models
from tests.support.errors import api_error, error_messages
from tests.support.factories import ProviderFactory, SignatureVersionFactory
from tests.support.faults import wait_for
from tests.support.specs import QA_LEVEL_SPEC

GPU = "inference-gpu"
CLUSTERS = ["inference", GPU]


@pytest.fixture
def two_clusters(settings):
    settings.Q_INFERENCE_CLUSTERS = CLUSTERS
    settings.Q_INFERENCE_CLUSTER = CLUSTERS[0]
    return CLUSTERS


@pytest.fixture
def small_and_big(db, two_clusters, tiny_model_dir, tiny_quantized_model_dir):
    """`small` served by the first inference cluster (named by nobody), `big` by the GPU one."""
    small = ProviderFactory(name="small", kind="mlx", model=str(tiny_model_dir), max_tokens=8)
    big = ProviderFactory(
        name="big",
        kind="mlx",
        model=str(tiny_quantized_model_dir),
        serving_cluster=GPU,
        max_tokens=8,
    )
    return small, big


def test_a_local_provider_runs_in_its_serving_cluster_others_in_the_default(small_and_big):
    small, big = small_and_big
    remote = ProviderFactory(name="remote", kind="openai")
    assert provider_route(provider=small).cluster == "inference"
    assert provider_route(provider=big).cluster == GPU
    assert provider_route(provider=remote).cluster is None
    assert provider_route(provider=big).batch_size == provider_route(provider=small).batch_size

    def routed(condition) -> set[str]:
        return set(Provider.objects.filter(condition).values_list("name", flat=True))

    assert routed(providers_routed_with(provider=small)) == {"small"}
    assert routed(providers_routed_with(provider=big)) == {"big"}
    assert routed(providers_routed_with(provider=remote)) == {"remote"}
    # A provider naming the first cluster outright shares the queue of those naming none.
    explicit = ProviderFactory(
        name="explicit", kind="mlx", model=small.model, serving_cluster="inference"
    )
    assert routed(providers_routed_to(cluster="inference")) == {"small", "explicit"}
    assert provider_route(provider=explicit).cluster == "inference"


def test_the_api_refuses_a_cluster_that_is_not_configured_or_not_for_the_kind(
    two_clusters, operator_client, tiny_model_dir
):
    local = {"name": "local", "kind": "mlx", "model": str(tiny_model_dir)}
    response = operator_client.post(
        "/api/v1/providers/", local | {"serving_cluster": "inference-tpu"}, "application/json"
    )
    assert api_error(response, 400)["code"] == "invalid_request"
    assert error_messages(response, "serving_cluster") == [
        "'inference-tpu' is not an inference cluster of this deployment "
        "(Q_INFERENCE_CLUSTERS: inference, inference-gpu)."
    ]
    custom = {"name": "custom", "kind": "custom", "model": "m", "serving_cluster": GPU}
    response = operator_client.post("/api/v1/providers/", custom, "application/json")
    assert api_error(response, 400)["code"] == "invalid_request"
    assert "Only local (mlx) providers" in error_messages(response, "serving_cluster")[0]
    assert not Provider.objects.exists()

    response = operator_client.post(
        "/api/v1/providers/", local | {"serving_cluster": GPU}, "application/json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["serving_cluster"] == GPU
    response = operator_client.patch(
        "/api/v1/providers/local/", {"serving_cluster": ""}, "application/json"
    )
    assert response.status_code == 200, response.json()
    assert Provider.objects.get(name="local").serving_cluster == ""


@pytest.mark.django_db
def test_the_database_keeps_clusters_off_providers_that_are_not_local():
    provider = ProviderFactory(name="custom")
    with pytest.raises(IntegrityError), transaction.atomic():
        Provider.objects.filter(pk=provider.pk).update(serving_cluster=GPU)


def test_each_cluster_has_its_own_queue_bound(small_and_big, settings):
    small, big = small_and_big
    SignatureVersionFactory(signature__name="qa", spec=QA_LEVEL_SPEC)
    settings.EXECUTIONS_MAX_QUEUED = 2
    # Never handed to a broker (no commit in this test): they stay queued.
    for _ in range(2):
        execution_create(
            signature="qa", inputs={"question": "q", "level": 1}, provider="big", mode="async"
        )
    with pytest.raises(QueueFull):
        execution_admit(provider=big)
    execution_admit(provider=small)
    execution_admit(provider=ProviderFactory(name="remote"))


@pytest.fixture
def clean_runtime():
    unload_all()
    yield
    unload_all()


@pytest.mark.parametrize(("cluster", "served"), [("inference", "small"), (GPU, "big")])
def test_warm_up_loads_only_the_models_the_cluster_serves(
    small_and_big, clean_runtime, cluster, served
):
    providers = {provider.name: provider for provider in small_and_big}
    # Once a test: it closes its thread's database connection when done, as a worker's does.
    warm_up_local_models(cluster=cluster)
    assert [info.path for info in loaded_models()] == [
        str(providers[served].model_path().resolve())
    ]


def _settings_with(monkeypatch, repo_root, clusters: str) -> dict:
    """The base settings as a process with `Q_INFERENCE_CLUSTERS=clusters` reads them."""
    monkeypatch.setenv("Q_INFERENCE_CLUSTERS", clusters)
    return runpy.run_path(str(repo_root / "config" / "settings" / "base.py"))


def test_each_inference_cluster_gets_the_inference_settings(monkeypatch, repo_root):
    read = _settings_with(monkeypatch, repo_root, "inference-cpu, inference-gpu")
    assert read["Q_INFERENCE_CLUSTER"] == "inference-cpu"
    alternatives = read["Q_CLUSTER"]["ALT_CLUSTERS"]
    assert set(alternatives) == {"inference-cpu", GPU}
    assert alternatives["inference-cpu"] == alternatives[GPU]
    assert alternatives[GPU] is not alternatives["inference-cpu"]  # django-q2 pops from it
    assert alternatives[GPU]["timeout"] < alternatives[GPU]["retry"]


@pytest.mark.parametrize(
    "value", ["inference,default", "inference,inference", "tasks", "bad name", ","]
)
def test_settings_refuse_inference_clusters_that_clash(monkeypatch, repo_root, value):
    with pytest.raises(ImproperlyConfigured, match="Q_INFERENCE_CLUSTERS must list distinct"):
        _settings_with(monkeypatch, repo_root, value)


def _task_ids(key: str) -> set[str]:
    return {SignedPackage.loads(row.payload)["id"] for row in OrmQ.objects.filter(key=key)}


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_two_inference_clusters_each_run_and_load_only_what_they_serve(
    small_and_big, start_cluster, tmp_path
):
    small, big = small_and_big
    SignatureVersionFactory(signature__name="qa", spec=QA_LEVEL_SPEC)
    ids = {
        name: [
            execution_create(
                signature="qa",
                inputs={"question": f"q{number}", "level": 1},
                provider=name,
                mode="async",
            ).execution.id
            for number in range(4)
        ]
        for name in ("small", "big")
    }
    # Routed when enqueued: each task sits in its serving cluster's queue.
    tasks = {
        name: set(Execution.objects.filter(id__in=rows).values_list("task_id", flat=True))
        for name, rows in ids.items()
    }
    assert _task_ids("inference") == tasks["small"]
    assert _task_ids(GPU) == tasks["big"]

    env = {
        "Q_INFERENCE_CLUSTERS": ",".join(CLUSTERS),
        "MONITORING_PROCESS_HEARTBEAT_S": "0.5",
        "LOG_LEVEL": "INFO",
    }
    logs = {name: tmp_path / f"{name}.log" for name in CLUSTERS}
    for name, path in logs.items():
        with path.open("w") as log:
            start_cluster(name, log=log, **env)
    every = [execution_id for rows in ids.values() for execution_id in rows]
    started = time.monotonic()
    wait_for(
        lambda: (
            not Execution.objects.filter(id__in=every)
            .exclude(status__in=Execution.TERMINAL_STATUSES)
            .exists()
        ),
        timeout=180,
        what="the executions of both clusters",
    )
    statuses = set(Execution.objects.filter(id__in=every).values_list("status", flat=True))
    assert statuses == {"succeeded"}, [log.read_text()[-2000:] for log in logs.values()]
    # The cluster that ran each task, as django-q2 records it (its pusher's own name); the
    # tasks of executions a batch took along finish after them, finding nothing to claim.
    every_task = tasks["small"] | tasks["big"]
    wait_for(
        lambda: Task.objects.filter(id__in=every_task).count() == len(every_task),
        timeout=60,
        what="every task's result",
    )
    ran_by = dict(Task.objects.values_list("id", "cluster"))
    assert {ran_by[task_id] for task_id in tasks["small"]} == {"inference"}
    assert {ran_by[task_id] for task_id in tasks["big"]} == {GPU}

    def models_held() -> dict[str, set[str]]:
        held: dict[str, set[str]] = {}
        for cluster, models in ServiceProcess.objects.filter(role="worker").values_list(
            "cluster", "loaded_models"
        ):
            held.setdefault(cluster, set()).update(item["path"] for item in models)
        return held

    expected = {
        "inference": {str(small.model_path().resolve())},
        GPU: {str(big.model_path().resolve())},
    }
    wait_for(lambda: models_held() == expected, timeout=30, what="the workers' model reports")
    warmed = {name: path.read_text() for name, path in logs.items()}
    assert "Warmed up the model of provider 'small'" in warmed["inference"]
    assert "'big'" not in warmed["inference"]
    assert "Warmed up the model of provider 'big'" in warmed[GPU]
    assert "'small'" not in warmed[GPU]
    print(
        f"\n[two inference clusters] executions={len(every)}, "
        f"all_final_s={time.monotonic() - started:.1f}, models={models_held()}"
    )
