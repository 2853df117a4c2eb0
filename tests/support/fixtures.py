"""Pytest fixtures for the MLX path; registered from tests/conftest.py via `pytest_plugins`."""

from pathlib import Path

import pytest

from tests.support.tiny_model import build_tiny_gguf, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight llama model directory, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_quantized_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with 4-bit weights, like the converted default model."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-quantized-model"), quantized=True)


@pytest.fixture(scope="session")
def tiny_gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a GGUF file, for the converter."""
    return build_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real default model, installed (once, then cached) where the quick start puts it."""
    from django.conf import settings

    from providers.mlx.default_model import install_default_model

    return install_default_model(
        models_dir=Path(settings.VAR_DIR) / "models", progress=lambda _: None
    )
