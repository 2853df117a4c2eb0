"""The model cache and the batching scheduler, on the tiny random-weight model.

The tiny model's greedy output is gibberish but deterministic, which is all these tests need:
they compare runs with each other, never with expected prose.
"""

import json
import multiprocessing
import shutil
import threading

import pytest

from providers.mlx import runtime
from providers.mlx.blas import blas_status
from providers.mlx.hardware import DEQUANTIZED
from providers.mlx.runtime import (
    MAX_BATCH_SIZE_ENV,
    GenerationError,
    GenerationResult,
    ModelLoadError,
    generate,
    load_model,
    loaded_models,
    unload_all,
)

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(autouse=True)
def _fresh_cache():
    unload_all()
    yield
    unload_all()


def _ask(model_dir, content: str = "What is the capital of France?", **options):
    options.setdefault("max_tokens", 24)
    return generate(
        model_path=str(model_dir), messages=[{"role": "user", "content": content}], **options
    )


def test_generate_reports_text_tokens_memory_and_time(tiny_model_dir):
    result = _ask(tiny_model_dir, max_tokens=12)

    assert isinstance(result, GenerationResult)
    assert result.text
    assert result.prompt_tokens > 5
    assert result.completion_tokens == 12
    assert result.finish_reason == "length"
    assert result.peak_memory_mb > 0
    assert result.duration_s > 0


def test_greedy_generation_is_deterministic(tiny_model_dir):
    first = _ask(tiny_model_dir)
    unload_all()
    second = _ask(tiny_model_dir)

    assert (second.text, second.completion_tokens) == (first.text, first.completion_tokens)


def test_max_tokens_is_honoured(tiny_model_dir):
    for max_tokens in (1, 5, 17):
        assert _ask(tiny_model_dir, max_tokens=max_tokens).completion_tokens == max_tokens


def test_stop_sequence_ends_generation_early_and_is_cut(tiny_model_dir):
    full = _ask(tiny_model_dir, max_tokens=40)
    stop = full.text[10:13]
    expected = full.text[: full.text.find(stop)]

    stopped = _ask(tiny_model_dir, max_tokens=40, stop=["never in the output", stop])

    assert stopped.text == expected
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < full.completion_tokens


def test_assistant_prefix_is_in_the_prompt_not_in_the_text(tiny_model_dir):
    plain = _ask(tiny_model_dir, max_tokens=8)
    prefixed = generate(
        model_path=str(tiny_model_dir), messages=QUESTION, assistant_prefix="answer:", max_tokens=8
    )

    assert prefixed.prompt_tokens > plain.prompt_tokens
    assert not prefixed.text.startswith("answer:")
    assert prefixed.text != plain.text


def test_sampling_settings_are_accepted(tiny_model_dir):
    result = _ask(tiny_model_dir, max_tokens=6, temperature=0.8, top_p=0.9)
    assert result.completion_tokens == 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 4, "temperature": -1.0}, "temperature"),
    ],
)
def test_bad_arguments_are_refused_before_loading(tiny_model_dir, options, message):
    with pytest.raises(ValueError, match=message):
        _ask(tiny_model_dir, **options)
    assert loaded_models() == []


def test_messages_the_template_cannot_render_are_bad_arguments(tiny_model_dir):
    with pytest.raises(ValueError, match="chat template rejected"):
        generate(model_path=str(tiny_model_dir), messages=[{"role": "user"}], max_tokens=2)
    with pytest.raises(ValueError, match="must not be empty"):
        generate(model_path=str(tiny_model_dir), messages=[], max_tokens=2)


def test_a_model_without_chat_template_is_a_load_error(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))

    with pytest.raises(ModelLoadError, match="no chat template"):
        _ask(model_dir)


def test_missing_model_directory_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no model directory"):
        _ask(tmp_path / "absent")


def test_broken_model_is_a_load_error_and_is_not_cached(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')

    with pytest.raises(ModelLoadError, match="cannot load the model"):
        _ask(tmp_path)
    assert loaded_models() == []


def test_concurrent_callers_share_one_load(tiny_model_dir):
    barrier = threading.Barrier(6)
    infos = []

    def load():
        barrier.wait()
        infos.append(load_model(model_path=str(tiny_model_dir)))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(loaded_models()) == 1
    assert len({info.path for info in infos}) == 1
    # Another spelling of the same directory is the same model.
    load_model(model_path=str(tiny_model_dir / ".." / tiny_model_dir.name))
    assert len(loaded_models()) == 1
    # Without optimisations is a separate load.
    load_model(model_path=str(tiny_model_dir), optimize=False)
    assert len(loaded_models()) == 2


def test_unload_all_empties_the_cache(tiny_model_dir):
    _ask(tiny_model_dir, max_tokens=2)
    assert [info.requests_served for info in loaded_models()] == [1]
    unload_all()
    assert loaded_models() == []


def test_cpu_optimisations_are_applied_and_recorded(tiny_quantized_model_dir):
    optimized = _ask(tiny_quantized_model_dir, max_tokens=4)
    plain = _ask(tiny_quantized_model_dir, max_tokens=4, optimize=False)

    if runtime.mlx_backend() != "cpu":
        assert optimized.applied_optimizations == ()
        return
    status = blas_status()
    expected = (DEQUANTIZED, status.name) if status.fast else ()
    assert optimized.applied_optimizations == expected
    assert plain.applied_optimizations == ()
    info = {model.optimize: model for model in loaded_models()}
    assert info[True].applied_optimizations == optimized.applied_optimizations


def test_unquantized_model_is_not_dequantized(tiny_model_dir):
    assert DEQUANTIZED not in _ask(tiny_model_dir, max_tokens=2).applied_optimizations


def _requests() -> list[dict]:
    """Different prompts, lengths, limits and stops, so a batch mixes them all."""
    topics = ["cats", "the sea", "Paris", "numbers 12345", "a quick fox", "hello world"]
    return [
        {
            "content": f"Tell me about {topic}." * (1 + index % 3),
            "max_tokens": 6 + 5 * index,
            "stop": ["XYZ-never"] if index % 2 else None,
        }
        for index, topic in enumerate(topics)
    ]


def _run_concurrently(model_dir, requests: list[dict], *, hold_scheduler: bool):
    results: dict[int, GenerationResult] = {}

    def call(index: int) -> None:
        results[index] = _ask(model_dir, **requests[index])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    if hold_scheduler:
        # Keep the scheduler from stepping until every request is in, so the batch really
        # holds them together (otherwise the first could finish alone).
        received = loaded_models()[0].requests_received
        with runtime._MLX_LOCK:
            for thread in threads:
                thread.start()
            while loaded_models()[0].requests_received < received + len(requests):
                threading.Event().wait(0.005)
    else:
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join()
    return [results[index] for index in range(len(requests))]


def test_concurrent_requests_are_batched_with_the_same_greedy_text(tiny_model_dir):
    requests = _requests()
    sequential = [_ask(tiny_model_dir, **request) for request in requests]
    load_model(model_path=str(tiny_model_dir))

    batched = _run_concurrently(tiny_model_dir, requests, hold_scheduler=True)

    assert loaded_models()[0].largest_batch >= len(requests) - 1
    assert [r.text for r in batched] == [r.text for r in sequential]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in sequential]
    assert [r.prompt_tokens for r in batched] == [r.prompt_tokens for r in sequential]


def test_stop_sequences_hold_per_request_inside_a_batch(tiny_model_dir):
    full = _ask(tiny_model_dir, max_tokens=30)
    stop = full.text[6:9]
    requests = [
        {"max_tokens": 30, "stop": [stop]},
        {"max_tokens": 30},
        {"max_tokens": 3},
        {"max_tokens": 30, "stop": [stop]},
    ]
    load_model(model_path=str(tiny_model_dir))

    results = _run_concurrently(tiny_model_dir, requests, hold_scheduler=True)

    assert [r.text for r in results] == [
        full.text[: full.text.find(stop)],
        full.text,
        _ask(tiny_model_dir, max_tokens=3).text,
        full.text[: full.text.find(stop)],
    ]
    assert [r.finish_reason for r in results] == ["stop", "length", "length", "stop"]


def test_batching_can_be_switched_off(tiny_model_dir, monkeypatch):
    monkeypatch.setenv(MAX_BATCH_SIZE_ENV, "1")
    requests = _requests()[:4]
    load_model(model_path=str(tiny_model_dir))

    results = _run_concurrently(tiny_model_dir, requests, hold_scheduler=True)

    assert loaded_models()[0].largest_batch == 1
    assert all(result.text for result in results)


def test_many_threads_get_their_own_answers(tiny_model_dir):
    requests = _requests() * 3
    expected = [_ask(tiny_model_dir, **request).text for request in requests]

    results = _run_concurrently(tiny_model_dir, requests, hold_scheduler=False)

    assert [r.text for r in results] == expected


def _ask_in_forked_child(model_dir, answers) -> None:
    try:
        answers.put(_ask(model_dir, max_tokens=2).text)
    except GenerationError as exc:
        answers.put(f"GenerationError: {exc}")


def test_a_child_forked_after_mlx_ran_gets_an_error_not_a_hang(tiny_model_dir):
    _ask(tiny_model_dir, max_tokens=2)
    unload_all()
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_ask_in_forked_child, args=(tiny_model_dir, answers))
    child.start()
    answer = answers.get(timeout=60)
    child.join(timeout=10)

    assert answer.startswith("GenerationError: this process was forked")


def test_unloading_while_requests_arrive_loses_none(tiny_model_dir):
    expected = _ask(tiny_model_dir, max_tokens=8).text
    answers: list[str] = []
    asking = [
        threading.Thread(target=lambda: answers.append(_ask(tiny_model_dir, max_tokens=8).text))
        for _ in range(24)
    ]
    for thread in asking:
        thread.start()
    for _ in range(5):
        unload_all()
    for thread in asking:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in asking)
    assert answers == [expected] * 24


def test_a_request_arriving_while_a_batch_decodes_joins_it_at_the_next_step(tiny_model_dir):
    long_request = {"content": "Tell me about the sea.", "max_tokens": 400}
    short_request = {"content": "What is the capital of France?", "max_tokens": 3}
    long_alone = _ask(tiny_model_dir, **long_request)
    short_alone = _ask(tiny_model_dir, **short_request)
    # A fresh scheduler, so that its largest batch says when the long request is in.
    unload_all()
    load_model(model_path=str(tiny_model_dir))
    results: dict[str, GenerationResult] = {}
    finished: list[str] = []

    def call(name: str, request: dict) -> None:
        results[name] = _ask(tiny_model_dir, **request)
        finished.append(name)

    long_thread = threading.Thread(target=call, args=("long", long_request))
    long_thread.start()
    while loaded_models()[0].largest_batch < 1:
        threading.Event().wait(0.005)
    short_thread = threading.Thread(target=call, args=("short", short_request))
    short_thread.start()
    short_thread.join()
    long_thread.join()

    info = loaded_models()[0]
    assert info.requests_joined_running == 1
    assert info.largest_batch == 2
    assert finished == ["short", "long"]
    assert results["short"].text == short_alone.text
    assert results["long"].text == long_alone.text
    assert results["long"].completion_tokens == long_alone.completion_tokens == 400


def test_requests_that_start_together_do_not_count_as_joining(tiny_model_dir):
    load_model(model_path=str(tiny_model_dir))

    _run_concurrently(tiny_model_dir, _requests()[:4], hold_scheduler=True)

    info = loaded_models()[0]
    assert (info.largest_batch, info.requests_joined_running) == (4, 0)


def test_every_kind_of_stop_sequence_cuts_where_the_whole_text_has_it(tiny_model_dir):
    # The scheduler decodes a request's text only at tokens that can complete one of its stop
    # sequences: stops ending in a space, a letter, a digit, punctuation or a character that is
    # not ASCII (the tiny model writes stray bytes, decoded as U+FFFD) must all be found exactly
    # where a search of the whole text finds them.
    full = _ask(tiny_model_dir, max_tokens=60).text
    windows = [full[start : start + 3] for start in range(4, len(full) - 3)]
    usable = [w for w in windows if w.isascii() and w.isprintable()]
    stops = [
        *[w for w in usable if w.endswith(" ")][:2],
        *[w for w in usable if w[-1].isalpha()][:2],
        *[w for w in usable if w[-1].isdigit()][:1],
        *[w for w in usable if not w[-1].isalnum() and not w.endswith(" ")][:2],
        *[w for w in windows if w.endswith("\ufffd") and w[:2].isascii() and w.isprintable()][:1],
    ]
    assert len(stops) >= 6, (full, stops)
    requests = [{"max_tokens": 60, "stop": [stop]} for stop in stops]
    load_model(model_path=str(tiny_model_dir))

    results = _run_concurrently(tiny_model_dir, requests, hold_scheduler=True)

    assert [r.text for r in results] == [full[: full.find(stop)] for stop in stops]
    assert all(r.finish_reason == "stop" for r in results)


def test_a_token_completing_a_character_split_over_tokens_may_complete_a_stop(tiny_model_dir):
    scheduler = runtime._scheduler(str(tiny_model_dir), optimize=True)
    tokenizer = scheduler.tokenizer
    accented = tokenizer.encode("é", add_special_tokens=False)
    [line_break] = tokenizer.encode("\n", add_special_tokens=False)
    assert len(accented) == 2, accented  # one byte-level token per UTF-8 byte: neither is "é"
    greedy = scheduler.sampler(temperature=0.0, top_p=1.0)

    def request(stop: str) -> runtime._Request:
        return runtime._Request(prompt=[1], prefix=None, max_tokens=1, sampler=greedy, stop=(stop,))

    assert scheduler._may_complete_stop(request("café"), accented[1])
    # A lone byte of a longer character holds nothing ASCII: no stop ending in ASCII ends there.
    assert not scheduler._may_complete_stop(request("a\n"), accented[1])
    assert scheduler._may_complete_stop(request("a\n"), line_break)
