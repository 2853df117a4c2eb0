"""Inference workers load the enabled local models when they start."""

import time
from pathlib import Path

import pytest

from executions.signals import warm_up_local_models
from providers.mlx.runtime import loaded_models, unload_all
from providers.services import provider_warm_up


@pytest.fixture
def clean_runtime():
    unload_all()
    yield
    unload_all()


@pytest.mark.django_db
def test_warm_up_loads_enabled_local_models_only(make_provider, tiny_model_dir, clean_runtime):
    make_provider("tiny", kind="mlx", model=str(tiny_model_dir))
    make_provider("off", kind="mlx", model=str(tiny_model_dir), enabled=False)
    make_provider("remote", base_url="http://127.0.0.1:9/v1")
    assert loaded_models() == []
    warm_up_local_models()
    assert [info.path for info in loaded_models()] == [str(Path(tiny_model_dir).resolve())]


@pytest.mark.django_db
def test_provider_warm_up(make_provider, tiny_model_dir, clean_runtime):
    assert provider_warm_up(provider=make_provider("remote")) is None
    seconds = provider_warm_up(
        provider=make_provider("tiny", kind="mlx", model=str(tiny_model_dir))
    )
    assert seconds is not None and seconds >= 0
    assert len(loaded_models()) == 1


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_an_inference_worker_warms_up_at_start(
    make_provider, tiny_model_dir, start_cluster, tmp_path
):
    make_provider("tiny", kind="mlx", model=str(tiny_model_dir))
    log_path = tmp_path / "cluster.log"
    with log_path.open("w") as log:
        process = start_cluster("inference", log=log, LOG_LEVEL="INFO")
    deadline = time.monotonic() + 90
    while "Warmed up the model of provider 'tiny'" not in log_path.read_text():
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        assert process.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.2)
