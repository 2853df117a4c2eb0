"""A fast BLAS for MLX's CPU backend.

The Linux `mlx[cpu]` wheel bundles the reference BLAS (about 6 GFLOP/s for a 1024x1024
float32 matmul on this machine class); Debian's OpenBLAS does the same matmul at over
300 GFLOP/s. libmlx resolves `cblas_sgemm` once, when it is loaded, searching the process's
global symbol scope before its own bundled copy, so OpenBLAS wins only if it entered the
global scope before MLX was imported: through `LD_PRELOAD` in the environment of a child
process (`worker_environment`), or by `preload_fast_blas` in this process before the first
`import mlx`.

Nothing here imports MLX.
"""

import ctypes
import ctypes.util
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from core import env

# Debian's `libopenblas0-pthread`, the build measured here (PyPI's `cmeel-openblas` matched it
# on one thread but fell to a third of its speed on two, and needs the system libgfortran).
# Multiarch directories for the architectures MLX ships Linux wheels for.
DEBIAN_PACKAGE = "libopenblas0-pthread"
OPENBLAS_CANDIDATES = tuple(
    Path(f"/usr/lib/{triplet}/openblas-pthread/libopenblas.so.0")
    for triplet in ("x86_64-linux-gnu", "aarch64-linux-gnu")
)
FAST_BLAS_NAMES = {"libopenblas": "openblas", "libmkl_rt": "mkl", "libblis": "blis"}
# Set to 0 to keep MLX's bundled BLAS (the benchmark's "without optimisations" run).
DISABLE_ENV = "DSPY_TOOLKIT_FAST_BLAS"


@dataclass(frozen=True)
class BlasStatus:
    """Which BLAS MLX's CPU kernels call in this process."""

    fast: bool
    name: str | None
    path: str | None


def find_fast_blas() -> Path | None:
    """The installed OpenBLAS shared library to preload, or None."""
    if platform.system() != "Linux":
        return None
    return next((path for path in OPENBLAS_CANDIDATES if path.exists()), None)


def _disabled() -> bool:
    return not env.get_bool(DISABLE_ENV, default=True)


def _thread_count() -> str:
    # Measured on the 2-core machine with the default model: every core beats one thread,
    # prefill 155 against 110 tokens/s and decode 13.3 against 9.8. One inference worker per
    # machine is assumed; several would share the cores.
    return str(os.cpu_count() or 1)


def worker_environment() -> dict[str, str]:
    """Extra environment for a child process that will run MLX with the fast BLAS.

    Empty where there is nothing to gain: not Linux (macOS uses Accelerate), OpenBLAS not
    installed, or fast BLAS switched off with DSPY_TOOLKIT_FAST_BLAS=0.
    """
    library = find_fast_blas()
    if library is None or _disabled():
        return {}
    preload = env.get("LD_PRELOAD") or ""
    if str(library) not in preload.split():
        preload = f"{library} {preload}".strip()
    return {
        "LD_PRELOAD": preload,
        "OPENBLAS_NUM_THREADS": env.get("OPENBLAS_NUM_THREADS") or _thread_count(),
    }


def preload_fast_blas() -> bool:
    """Load OpenBLAS into the global symbol scope if MLX is not imported yet.

    Returns whether it did. Harmless when it is already there (LD_PRELOAD) or unavailable.
    """
    library = find_fast_blas()
    if library is None or _disabled() or "mlx.core" in sys.modules:
        return False
    os.environ.setdefault("OPENBLAS_NUM_THREADS", _thread_count())
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    return True


class _DlInfo(ctypes.Structure):
    _fields_ = (
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    )


def _global_sgemm_library() -> str | None:
    """The file that the global symbol scope resolves `cblas_sgemm` to, if any."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name)
    process = ctypes.CDLL(None)
    try:
        address = ctypes.cast(process.cblas_sgemm, ctypes.c_void_p).value
    except AttributeError:
        return None
    info = _DlInfo()
    if not hasattr(libc, "dladdr") or not libc.dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
        return None
    return os.path.realpath(info.dli_fname.decode()) if info.dli_fname else None


class _DlPhdrInfo(ctypes.Structure):
    _fields_ = (("dlpi_addr", ctypes.c_void_p), ("dlpi_name", ctypes.c_char_p))


def _loaded_libraries() -> list[str]:
    """Shared objects of this process in load order (the order symbol lookup searches)."""
    names: list[str] = []

    @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_DlPhdrInfo), ctypes.c_size_t, ctypes.c_void_p)
    def collect(info, _size, _data):
        if name := info.contents.dlpi_name:
            names.append(os.path.realpath(name.decode()))
        return 0

    process = ctypes.CDLL(None)
    if hasattr(process, "dl_iterate_phdr"):
        process.dl_iterate_phdr(collect, None)
    return names


def _fast_blas_name(path: str) -> str | None:
    filename = Path(path).name
    return next(
        (name for prefix, name in FAST_BLAS_NAMES.items() if filename.startswith(prefix)), None
    )


def blas_status() -> BlasStatus:
    """Whether MLX's CPU kernels get a fast BLAS in this process, and which one.

    libmlx binds `cblas_sgemm` from the global scope when it is loaded; a fast BLAS counts
    only if the global scope resolves to it and it was loaded before libmlx. One merely
    mapped (numpy's private, symbol-prefixed OpenBLAS) or loaded too late does not.
    """
    if platform.system() == "Darwin":
        # MLX on macOS calls Accelerate.
        return BlasStatus(fast=True, name="accelerate", path=None)
    libraries = _loaded_libraries()
    bundled = next((lib for lib in libraries if "mlx" in lib and "blas" in Path(lib).name), None)
    path = _global_sgemm_library()
    name = _fast_blas_name(path) if path else None
    libmlx = next((i for i, lib in enumerate(libraries) if Path(lib).name == "libmlx.so"), None)
    if name is not None and libmlx is not None and path in libraries:
        name = name if libraries.index(path) < libmlx else None
    if name is None:
        return BlasStatus(fast=False, name="reference" if bundled else None, path=bundled)
    return BlasStatus(fast=True, name=name, path=path)
