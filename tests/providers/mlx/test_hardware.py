"""The hardware report and the BLAS detection, in this process and in child processes."""

import json
import os
import subprocess
import sys

import pytest

from providers.mlx.blas import DISABLE_ENV, blas_status, find_fast_blas, worker_environment
from providers.mlx.hardware import DEQUANTIZED, cpu_optimizations, hardware_report

FIELDS = {
    "os": str,
    "os_release": str,
    "machine": str,
    "apple_silicon": bool,
    "mlx_backend": str,
    "mlx_version": str,
    "mlx_lm_version": str,
    "memory_total_bytes": int,
    "memory_available_bytes": int,
    "cpu_count": int,
    "fast_blas_in_use": bool,
    "cpu_optimizations": list,
}

REPORT_SCRIPT = (
    "import json; from providers.mlx.hardware import hardware_report; "
    "print(json.dumps(hardware_report()))"
)


def test_report_has_every_field_and_is_json():
    report = hardware_report()

    for name, kind in FIELDS.items():
        assert isinstance(report[name], kind), name
    assert json.loads(json.dumps(report)) == report
    assert report["mlx_backend"] in {"metal", "cuda", "cpu"}
    assert 0 < report["memory_available_bytes"] <= report["memory_total_bytes"]
    assert report["cpu_count"] >= 1


def test_cpu_optimizations_follow_the_backend_the_blas_and_the_memory():
    report = hardware_report()
    if report["mlx_backend"] != "cpu" or not blas_status().fast:
        # De-quantised weights are slower than the quantized kernels without a fast BLAS.
        assert cpu_optimizations(dequantized_bytes=1 << 20) == []
        return
    blas = blas_status().name
    assert cpu_optimizations(dequantized_bytes=1 << 20) == [DEQUANTIZED, blas]
    # Weights that cannot fit stay quantized.
    too_big = report["memory_total_bytes"] * 2
    assert cpu_optimizations(dequantized_bytes=too_big) == [blas]


def _child_report(env: dict[str, str]) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", REPORT_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout)


@pytest.mark.skipif(find_fast_blas() is None, reason="Debian's libopenblas0-pthread is missing")
def test_worker_environment_gives_a_child_the_fast_blas():
    environment = worker_environment()
    if not environment:
        pytest.skip(f"fast BLAS switched off with {DISABLE_ENV}=0")
    assert str(find_fast_blas()) in environment["LD_PRELOAD"]
    assert int(environment["OPENBLAS_NUM_THREADS"]) >= 1

    report = _child_report(os.environ | environment)

    assert report["fast_blas_in_use"] is True
    assert report["blas_library"] == "openblas"
    assert report["cpu_optimizations"] == [DEQUANTIZED, "openblas"]


@pytest.mark.skipif(sys.platform != "linux", reason="the bundled reference BLAS is Linux's")
def test_fast_blas_can_be_switched_off_for_a_process(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "0")
    assert worker_environment() == {}
    environment = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}

    report = _child_report(environment)

    assert report["fast_blas_in_use"] is False
    assert report["blas_library"] == "reference"
    assert report["cpu_optimizations"] == []
