"""Fixtures for the MLX runtime tests."""

from tests.support.fixtures import tiny_gguf_path, tiny_model_dir, tiny_quantized_model_dir

__all__ = ["tiny_gguf_path", "tiny_model_dir", "tiny_quantized_model_dir"]
