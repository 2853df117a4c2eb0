"""Inference workers load the enabled local models when they start."""

import time
from pathlib import Path

import pytest

from providers.lms import provider_warm_up
from providers.mlx.runtime import loaded_models, unload_all
from providers.signals import warm_up_local_models
from tests.support.factories import ProviderFactory


@pytest.fixture
def clean_runtime():
    unload_all()
    yield
    unload_all()


@pytest.mark.django_db
def test_warm_up_loads_enabled_local_models_only(tiny_model_dir, clean_runtime):
    ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir))
    ProviderFactory(name="off", kind="mlx", model=str(tiny_model_dir), enabled=False)
    ProviderFactory(name="remote", kind="openai")
    assert loaded_models() == []
    warm_up_local_models()
    assert [info.path for info in loaded_models()] == [str(Path(tiny_model_dir).resolve())]


@pytest.mark.django_db
def test_provider_warm_up(tiny_model_dir, clean_runtime):
    assert provider_warm_up(provider=ProviderFactory(name="remote", kind="openai")) is None
    seconds = provider_warm_up(
        provider=ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir))
    )
    assert seconds is not None and seconds >= 0
    assert len(loaded_models()) == 1


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_an_inference_worker_warms_up_at_start(tiny_model_dir, start_cluster, tmp_path):
    ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir))
    log_path = tmp_path / "cluster.log"
    with log_path.open("w") as log:
        process = start_cluster("inference", log=log, LOG_LEVEL="INFO")
    deadline = time.monotonic() + 90
    while "Warmed up the model of provider 'tiny'" not in log_path.read_text():
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        assert process.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.2)
