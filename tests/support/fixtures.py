"""Pytest fixtures for the MLX path; registered from tests/conftest.py via `pytest_plugins`."""

from pathlib import Path

import pytest

from tests.support.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight llama model directory, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
