"""What this machine offers local inference: OS, CPU, memory, MLX backend, BLAS.

Django-free (the MLX worker processes call it too). `cpu_optimizations` is the single place
that decides which CPU optimisations a model load applies, so the report and the runtime
never disagree.
"""

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

# Imported for its side effect first: a fast BLAS must be in the process before MLX.
from providers.mlx.blas import DEBIAN_PACKAGE, blas_status, find_fast_blas

import mlx.core as mx  # isort: skip

DEQUANTIZED = "dequantized-float32"
# Memory kept free beyond the de-quantised weights: the quantized copy while converting,
# activations, the KV caches of a batch, and the rest of the worker.
DEQUANTIZE_HEADROOM_BYTES = 1 << 30


def mlx_backend() -> str:
    """`metal`, `cuda` or `cpu`: where MLX runs its kernels by default in this process."""
    if mx.default_device() == mx.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    return "cuda"


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _meminfo() -> dict[str, int]:
    values = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    return values


def _cgroup_limit() -> int | None:
    """The memory this process's cgroup may still use, when a limit is set (containers)."""
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        current = int((cgroup / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - current, 0)


def _sysctl(name: str) -> int:
    return int(subprocess.run(["sysctl", "-n", name], capture_output=True, text=True).stdout)


def memory_bytes() -> tuple[int, int]:
    """(total, available) memory in bytes."""
    if platform.system() == "Darwin":
        total = _sysctl("hw.memsize")
        page = _sysctl("hw.pagesize")
        vm_stat = subprocess.run(["vm_stat"], capture_output=True, text=True).stdout
        pages = {
            key.strip(): int(value.strip().rstrip("."))
            for key, value in re.findall(r"^(Pages [^:]+):\s+(\d+\.?)$", vm_stat, re.MULTILINE)
        }
        free = sum(pages.get(f"Pages {kind}", 0) for kind in ("free", "inactive", "speculative"))
        return total, free * page
    meminfo = _meminfo()
    total, available = meminfo["MemTotal"], meminfo["MemAvailable"]
    if (limit := _cgroup_limit()) is not None:
        available = min(available, limit)
    return total, available


def cpu_optimizations(*, dequantized_bytes: int | None = None) -> list[str]:
    """The CPU optimisations a model load applies on this machine, in this process.

    Empty off the CPU backend: Metal and CUDA have their own fast quantized kernels. On the
    CPU, de-quantised float32 weights pay only through a fast BLAS (measured with the
    bundled reference BLAS: prefill no faster, decode 40% slower than the quantized kernels),
    and only if they fit in the available memory; with `dequantized_bytes` unknown (the
    general report) the memory condition is left out.
    """
    if mlx_backend() != "cpu":
        return []
    status = blas_status()
    if not (status.fast and status.name):
        return []
    _total, available = memory_bytes()
    if dequantized_bytes is None or dequantized_bytes + DEQUANTIZE_HEADROOM_BYTES <= available:
        return [DEQUANTIZED, status.name]
    return [status.name]


def hardware_report() -> dict:
    """A JSON-able description of the machine as local inference sees it."""
    total, available = memory_bytes()
    machine = platform.machine()
    system = platform.system()
    status = blas_status()
    backend = mlx_backend()
    installed_blas = find_fast_blas()
    return {
        "os": system,
        "os_release": platform.release(),
        "machine": machine,
        "apple_silicon": system == "Darwin" and machine == "arm64",
        "mlx_backend": backend,
        "mlx_version": mx.__version__,
        "mlx_lm_version": _package_version("mlx-lm"),
        "memory_total_bytes": total,
        "memory_available_bytes": available,
        "cpu_count": os.cpu_count() or 1,
        "fast_blas_in_use": backend == "cpu" and status.fast,
        "blas_library": status.name,
        "fast_blas_installed": str(installed_blas) if installed_blas else None,
        "fast_blas_package": DEBIAN_PACKAGE if system == "Linux" else None,
        "cpu_optimizations": cpu_optimizations(),
    }
