"""The MLX engine on the tiny random-weight model: the real runtime, in milliseconds."""

import dspy
import pytest
from dspy.lm15 import Config, Message, Request

from providers.engines import EngineConfig, MLXEngine, collect_generation_stats, request_messages


def engine_config(model_dir, **overrides) -> EngineConfig:
    return EngineConfig(
        **{
            "name": "tiny",
            "kind": "mlx",
            "model": str(model_dir),
            "model_path": str(model_dir),
            "max_tokens": 8,
            "temperature": 0.0,
            "top_p": 1.0,
            "timeout_s": 30,
            "hardware_optimization": True,
        }
        | overrides
    )


def ask(engine: MLXEngine, **config) -> object:
    request = Request(
        model="tiny",
        system="You are a helpful assistant.",
        messages=(Message.user("What is the capital of France?"),),
        config=Config(**config),
    )
    return engine.complete(request)


def test_request_messages_split_off_the_assistant_prefill():
    request = Request(
        model="m",
        system="Be brief.",
        messages=(Message.user("question: hi"), Message.assistant("answer:")),
    )
    assert request_messages(request) == (
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "question: hi"}],
        "answer:",
    )


def test_usage_and_stats_are_reported(tiny_model_dir):
    engine = MLXEngine(config=engine_config(tiny_model_dir))
    with collect_generation_stats() as stats:
        response = ask(engine, max_tokens=6)
    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 6
    assert response.provider_data["peak_memory_mb"] > 0
    assert isinstance(response.provider_data["applied_optimizations"], list)
    assert len(stats) == 1
    assert stats[0].input_tokens == response.usage.input_tokens
    assert stats[0].output_tokens == response.usage.output_tokens


def test_max_tokens_from_the_request_wins_over_the_provider_default(tiny_model_dir):
    engine = MLXEngine(config=engine_config(tiny_model_dir, max_tokens=3))
    assert ask(engine).usage.output_tokens <= 3
    response = ask(engine, max_tokens=1)
    assert response.usage.output_tokens == 1
    assert response.finish_reason == "length"


def test_stop_sequences_end_the_text(tiny_model_dir):
    engine = MLXEngine(config=engine_config(tiny_model_dir, max_tokens=24))
    full = ask(engine).message.text
    assert len(full) > 4, full
    stop = full[len(full) // 2 :][:2]
    cut = ask(engine, stop=(stop,)).message.text
    assert cut == full[: full.index(stop)]
    assert stop not in cut


def test_temperature_and_top_p_are_accepted(tiny_model_dir):
    engine = MLXEngine(config=engine_config(tiny_model_dir))
    response = ask(engine, temperature=0.9, top_p=0.5, max_tokens=4)
    assert response.usage.output_tokens <= 4


def test_through_dspy_lm_with_usage_tracking(tiny_model_dir):
    engine = MLXEngine(config=engine_config(tiny_model_dir))
    lm = dspy.LM("mlx/tiny", engine=engine, cache=False, num_retries=0, max_tokens=5)
    with dspy.track_usage() as usage:
        outputs = lm("Hello")
    assert isinstance(outputs[0], str)
    totals = usage.get_total_tokens()["mlx/tiny"]
    assert totals["prompt_tokens"] > 0
    assert 0 < totals["completion_tokens"] <= 5


def test_a_missing_model_is_a_configuration_error(tmp_path):
    engine = MLXEngine(config=engine_config(tmp_path / "gone"))
    lm = dspy.LM("mlx/gone", engine=engine, cache=False, num_retries=0)
    with pytest.raises(dspy.LMConfigurationError, match="cannot be loaded"):
        lm("Hello")
