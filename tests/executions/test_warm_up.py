"""Inference workers load the enabled local models when they start."""

import subprocess
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
def test_warm_up_loads_enabled_local_models_only(
    make_provider, tiny_model_dir, tmp_path, clean_runtime
):
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
    make_provider, tiny_model_dir, python, repo_root, subprocess_env, tmp_path
):
    make_provider("tiny", kind="mlx", model=str(tiny_model_dir))
    log_path = tmp_path / "cluster.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [python, "manage.py", "qcluster"],
            cwd=repo_root,
            env=subprocess_env | {"Q_CLUSTER_NAME": "inference", "LOG_LEVEL": "INFO"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while "Warmed up the model of provider 'tiny'" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            assert process.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
