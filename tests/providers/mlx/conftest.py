"""Fixtures for the MLX runtime tests."""

from tests.support.fixtures import (
    default_model_dir,
    tiny_gguf_path,
    tiny_model_dir,
    tiny_quantized_model_dir,
)

__all__ = ["default_model_dir", "tiny_gguf_path", "tiny_model_dir", "tiny_quantized_model_dir"]
