"""Fixtures for the MLX runtime tests."""

from tests.support.fixtures import tiny_model_dir

__all__ = ["tiny_model_dir"]
