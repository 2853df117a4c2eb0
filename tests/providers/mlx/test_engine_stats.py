"""What the MLX engine reports of the runtime's prefix cache, on the tiny random-weight model."""

import pytest
from dspy.lm15 import Config, Message, Request

from providers.engines import EngineConfig, MLXEngine, collect_generation_stats
from providers.mlx.runtime import PREFIX_CACHE_MB_ENV, unload_all

SYSTEM = "Answer the question in one short sentence. answer: the answer."


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv(PREFIX_CACHE_MB_ENV, raising=False)
    unload_all()
    yield
    unload_all()


def _engine(model_dir) -> MLXEngine:
    return MLXEngine(
        config=EngineConfig(
            name="tiny",
            kind="mlx",
            model=str(model_dir),
            model_path=str(model_dir),
            max_tokens=4,
            temperature=0.0,
            top_p=1.0,
            timeout_s=30,
            hardware_optimization=True,
        )
    )


def _ask(engine: MLXEngine, question: str):
    # A compact-adapter prompt with one demo: everything before the question is shared.
    request = Request(
        model="tiny",
        system=SYSTEM,
        messages=(
            Message.user("question: What is the capital of France?"),
            Message.assistant("answer: Paris"),
            Message.user(f"question: {question}"),
            Message.assistant("answer:"),
        ),
        config=Config(max_tokens=4),
    )
    with collect_generation_stats() as stats:
        response = engine.complete(request)
    return response, stats[0]


def test_cached_input_tokens_are_reported_with_the_usage_and_the_stats(tiny_model_dir):
    engine = _engine(tiny_model_dir)

    first, first_stats = _ask(engine, "What is two plus two?")
    second, second_stats = _ask(engine, "Hello world, what is the answer?")

    assert first.usage.cache_read_tokens == first_stats.cached_input_tokens == 0
    cached = second_stats.cached_input_tokens
    assert 0 < cached < second_stats.input_tokens == second.usage.input_tokens
    assert second.usage.cache_read_tokens == cached
    assert second.provider_data["cached_prompt_tokens"] == cached


def test_nothing_is_reported_cached_with_the_cache_off(tiny_model_dir, monkeypatch):
    monkeypatch.setenv(PREFIX_CACHE_MB_ENV, "0")
    engine = _engine(tiny_model_dir)

    _ask(engine, "What is two plus two?")
    response, stats = _ask(engine, "Hello world, what is the answer?")

    assert response.usage.cache_read_tokens == stats.cached_input_tokens == 0
