"""The MLX runtime's prefix cache: requests that share the messages before their last user turn
(a version's instructions and demos, a chat's earlier turns) prefill only their own tokens,
with exactly the greedy output they would have without it.

Every test compares the cache's answers with answers computed with the cache switched off
(`DSPY_TOOLKIT_MLX_PREFIX_CACHE_MB=0`), on the tiny random-weight model, whose greedy output
is gibberish but deterministic; one test does the same on the real default model.
"""

import functools
import json
import shutil
import threading

import pytest
from transformers import AutoTokenizer

from providers.adapters import CompactAdapter
from providers.mlx import runtime
from providers.mlx.runtime import (
    MAX_PREFIXES,
    MIN_PREFIX_TOKENS,
    PREFIX_CACHE_MB_ENV,
    GenerationError,
    GenerationResult,
    LoadedModelInfo,
    generate,
    loaded_models,
    unload_all,
    unload_model,
)
from registry.library import SIGNATURES
from registry.programs import signature_class_build

QUESTIONS = (
    "What is the capital of France?",
    "What is two plus two?",
    "Hello world, what is the answer?",
    "The quick brown fox is what?",
    "What is the capital of the sea?",
    "What is four plus one?",
)
SHORT_SYSTEM = {"role": "system", "content": "Hi."}
DEMOS = (
    ("What is the capital of France?", "Paris"),
    ("What is two plus two?", "four"),
    ("What is the quick brown fox?", "a fox"),
    ("Hello world?", "hello"),
)


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv(PREFIX_CACHE_MB_ENV, raising=False)
    unload_all()
    yield
    unload_all()


def _version(demos=DEMOS, instructions: str = "Answer the question in one short sentence."):
    """The messages of a compact-adapter prompt without its final user turn."""
    messages = [{"role": "system", "content": f"{instructions} answer: the answer."}]
    for question, answer in demos:
        messages.append({"role": "user", "content": f"question: {question}"})
        messages.append({"role": "assistant", "content": f"answer: {answer}"})
    return messages


def _request(version, question: str, **options) -> dict:
    options.setdefault("max_tokens", 12)
    return {
        "messages": [*version, {"role": "user", "content": f"question: {question}"}],
        "assistant_prefix": "answer:",
        **options,
    }


def _ask(model_dir, request: dict) -> GenerationResult:
    return generate(model_path=str(model_dir), **request)


def _uncached(model_dir, requests: list[dict], monkeypatch) -> list[GenerationResult]:
    """What the requests answer with the cache off, one at a time."""
    monkeypatch.setenv(PREFIX_CACHE_MB_ENV, "0")
    try:
        results = [_ask(model_dir, request) for request in requests]
    finally:
        monkeypatch.delenv(PREFIX_CACHE_MB_ENV)
    unload_all()
    assert all(result.cached_prompt_tokens == 0 for result in results)
    return results


def _info(model_dir) -> LoadedModelInfo:
    [info] = [info for info in loaded_models() if info.path == str(model_dir.resolve())]
    return info


@functools.cache
def _tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(str(model_dir))


def _prefix(model_dir, version) -> list[int]:
    """The tokens of the version's messages, templated on their own."""
    tokenizer = _tokenizer(model_dir)
    text = tokenizer.apply_chat_template(version, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def _shared(first: list[int], second: list[int]) -> int:
    """How many leading tokens two prefixes have in common."""
    return next(
        (i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b),
        min(len(first), len(second)),
    )


def _prefix_tokens(model_dir, version) -> int:
    return len(_prefix(model_dir, version))


def _concurrently(model_dir, requests: list[dict]) -> list[GenerationResult]:
    """Run the requests in one batch: the scheduler is held until all of them are queued."""
    results: dict[int, GenerationResult] = {}

    def call(index: int) -> None:
        results[index] = _ask(model_dir, requests[index])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    received = _info(model_dir).requests_received
    with runtime._MLX_LOCK:
        for thread in threads:
            thread.start()
        while _info(model_dir).requests_received < received + len(requests):
            threading.Event().wait(0.005)
    for thread in threads:
        thread.join()
    return [results[index] for index in range(len(requests))]


def _texts(results: list[GenerationResult]) -> list[tuple[str, int, int, str]]:
    return [(r.text, r.prompt_tokens, r.completion_tokens, r.finish_reason) for r in results]


def test_requests_of_one_version_reuse_its_prefix_with_the_same_greedy_text(
    tiny_model_dir, monkeypatch
):
    requests = [_request(_version(), question) for question in QUESTIONS[:4]]
    expected = _uncached(tiny_model_dir, requests, monkeypatch)
    prefix = _prefix_tokens(tiny_model_dir, _version())
    assert prefix >= MIN_PREFIX_TOKENS

    results = [_ask(tiny_model_dir, request) for request in requests]

    assert _texts(results) == _texts(expected)
    # The first request computed the prefix; the others started from it.
    assert [r.cached_prompt_tokens for r in results] == [0, prefix, prefix, prefix]
    info = _info(tiny_model_dir)
    assert (info.prefix_cache_hits, info.prefix_cache_misses) == (3, 1)
    assert info.prefix_cache_entries == 1
    assert info.prefix_cache_bytes > 0


def test_a_mixed_batch_of_cached_computed_and_unshared_prefixes(tiny_model_dir, monkeypatch):
    cached, computed = _version(), _version(DEMOS[::-1])
    requests = [
        _request(cached, QUESTIONS[0]),
        _request(computed, QUESTIONS[1], max_tokens=20),
        # No messages before the user turn: nothing to share.
        {"messages": [{"role": "user", "content": QUESTIONS[2]}], "max_tokens": 9},
        _request(cached, QUESTIONS[3], max_tokens=5),
        _request(computed, QUESTIONS[4]),
        # A prefix too short to be worth caching.
        {"messages": [SHORT_SYSTEM, {"role": "user", "content": QUESTIONS[5]}], "max_tokens": 15},
        _request(cached, QUESTIONS[2], stop=["XYZ-never"]),
    ]
    expected = _uncached(tiny_model_dir, requests, monkeypatch)
    assert _prefix_tokens(tiny_model_dir, [SHORT_SYSTEM]) < MIN_PREFIX_TOKENS
    _ask(tiny_model_dir, _request(cached, QUESTIONS[5]))

    results = _concurrently(tiny_model_dir, requests)

    assert _info(tiny_model_dir).largest_batch >= len(requests) - 1
    assert _texts(results) == _texts(expected)
    cached_tokens = [r.cached_prompt_tokens for r in results]
    full = _prefix_tokens(tiny_model_dir, cached)
    assert cached_tokens[0] == cached_tokens[3] == cached_tokens[6] == full
    # The reversed demos start like the cached version (the system line, the start of the
    # first question): those tokens were reused, the rest computed once for both requests.
    shared = _shared(_prefix(tiny_model_dir, cached), _prefix(tiny_model_dir, computed))
    assert MIN_PREFIX_TOKENS <= shared < _prefix_tokens(tiny_model_dir, computed)
    assert cached_tokens[1] == cached_tokens[4] == shared
    assert cached_tokens[2] == cached_tokens[5] == 0
    info = _info(tiny_model_dir)
    assert (info.prefix_cache_hits, info.prefix_cache_misses) == (3, 1 + 2)
    assert info.prefix_cache_entries == 2


def test_a_new_version_gets_its_own_prefix_and_the_old_one_stays_correct(
    tiny_model_dir, monkeypatch
):
    old = _version()
    new_demos = _version([*DEMOS[:3], ("What is four plus one?", "five")])
    new_instructions = _version(instructions="Reply with the answer only, in a word or two.")
    requests = [
        _request(old, QUESTIONS[0]),
        _request(new_demos, QUESTIONS[0]),
        _request(new_instructions, QUESTIONS[0]),
        _request(old, QUESTIONS[1]),
        _request(new_demos, QUESTIONS[1]),
        _request(new_instructions, QUESTIONS[1]),
    ]
    expected = _uncached(tiny_model_dir, requests, monkeypatch)

    results = [_ask(tiny_model_dir, request) for request in requests]

    assert _texts(results) == _texts(expected)
    old_tokens, demos_tokens, instructions_tokens = (
        _prefix(tiny_model_dir, version) for version in (old, new_demos, new_instructions)
    )
    # Changed demos: the system line and the first three demos came from the old version's
    # entry and only the rest was computed; changed instructions share only a role header,
    # too little to reuse.
    shared = _shared(old_tokens, demos_tokens)
    assert MIN_PREFIX_TOKENS <= shared < len(demos_tokens)
    assert [r.cached_prompt_tokens for r in results] == [
        0,
        shared,
        0,
        len(old_tokens),
        len(demos_tokens),
        len(instructions_tokens),
    ]
    info = _info(tiny_model_dir)
    assert (info.prefix_cache_entries, info.prefix_cache_hits, info.prefix_cache_misses) == (
        3,
        3,
        3,
    )


def test_a_prefix_that_begins_a_longer_cached_one_is_served_from_it(tiny_model_dir, monkeypatch):
    # The same instructions without and with demos: mlx-lm keeps only the longer entry.
    short, long = _version(demos=()), _version()
    requests = [
        _request(version, question)
        for version, question in zip((short, long, short, long), QUESTIONS, strict=False)
    ]
    expected = _uncached(tiny_model_dir, requests, monkeypatch)

    results = [_ask(tiny_model_dir, request) for request in requests]

    assert _texts(results) == _texts(expected)
    short_tokens, long_tokens = (_prefix_tokens(tiny_model_dir, v) for v in (short, long))
    assert short_tokens >= MIN_PREFIX_TOKENS
    # The long prefix extended the short entry and replaced it; the short prefix then came
    # from the long entry, trimmed short of its last token, which the request prefilled.
    assert [r.cached_prompt_tokens for r in results] == [
        0,
        short_tokens,
        short_tokens - 1,
        long_tokens,
    ]
    info = _info(tiny_model_dir)
    assert (info.prefix_cache_hits, info.prefix_cache_misses) == (2, 2)
    assert info.prefix_cache_entries == 1


def test_a_chat_reuses_its_earlier_turns(tiny_model_dir, monkeypatch):
    turns = [{"role": "system", "content": "You are a helpful assistant. Answer the question."}]
    requests = []
    for question, answer in DEMOS:
        turns.append({"role": "user", "content": question})
        requests.append({"messages": list(turns), "max_tokens": 8})
        turns.append({"role": "assistant", "content": f"The answer is {answer}."})
    expected = _uncached(tiny_model_dir, requests, monkeypatch)

    results = [_ask(tiny_model_dir, request) for request in requests]

    assert _texts(results) == _texts(expected)
    lengths = [len(_prefix(tiny_model_dir, request["messages"][:-1])) for request in requests]
    # The first turn computed the system line; from then on each turn starts from the whole
    # conversation before its previous question and computes only the turns after it.
    assert lengths[0] >= MIN_PREFIX_TOKENS
    assert [r.cached_prompt_tokens for r in results] == [0, *lengths[:-1]]
    # mlx-lm keeps the longest entry of a chain only: a longer prefix replaces its prefixes.
    assert _info(tiny_model_dir).prefix_cache_entries == 1


def test_the_byte_budget_evicts_the_least_recently_used_prefix(tiny_model_dir, monkeypatch):
    versions = [_version(DEMOS[index:] + DEMOS[:index]) for index in range(4)]
    requests = [_request(version, QUESTIONS[0]) for version in versions]
    expected = _uncached(tiny_model_dir, requests, monkeypatch)
    _ask(tiny_model_dir, requests[0])
    entry_bytes = _info(tiny_model_dir).prefix_cache_bytes
    budget = int(entry_bytes * 2.5)
    monkeypatch.setenv(PREFIX_CACHE_MB_ENV, str(budget / 1e6))

    second = _ask(tiny_model_dir, requests[1])
    first_again = _ask(tiny_model_dir, requests[0])  # now the most recently used
    third = _ask(tiny_model_dir, requests[2])  # evicts the second, not the first
    info = _info(tiny_model_dir)
    assert (info.prefix_cache_entries, info.prefix_cache_bytes) == (2, 2 * entry_bytes)
    first_kept = _ask(tiny_model_dir, requests[0])
    second_lost = _ask(tiny_model_dir, requests[1])

    full = _prefix_tokens(tiny_model_dir, versions[0])
    assert first_again.cached_prompt_tokens == first_kept.cached_prompt_tokens == full
    assert second_lost.cached_prompt_tokens < _prefix_tokens(tiny_model_dir, versions[1])
    assert _texts([second, first_again, third, first_kept, second_lost]) == _texts(
        [expected[1], expected[0], expected[2], expected[0], expected[1]]
    )
    assert _info(tiny_model_dir).prefix_cache_bytes <= budget


def test_a_prefix_larger_than_the_budget_is_used_once_and_not_kept(tiny_model_dir, monkeypatch):
    requests = [_request(_version(), question) for question in QUESTIONS[:2]]
    expected = _uncached(tiny_model_dir, requests, monkeypatch)
    monkeypatch.setenv(PREFIX_CACHE_MB_ENV, "0.001")

    results = [_ask(tiny_model_dir, request) for request in requests]

    assert _texts(results) == _texts(expected)
    assert [r.cached_prompt_tokens for r in results] == [0, 0]
    info = _info(tiny_model_dir)
    assert (info.prefix_cache_entries, info.prefix_cache_bytes) == (0, 0)
    assert (info.prefix_cache_hits, info.prefix_cache_misses) == (0, 2)


def test_the_number_of_prefixes_is_bounded(tiny_model_dir):
    for index in range(MAX_PREFIXES + 2):
        version = _version(instructions=f"Answer question number {index} in one sentence.")
        _ask(tiny_model_dir, _request(version, QUESTIONS[0], max_tokens=1))

    info = _info(tiny_model_dir)
    assert info.prefix_cache_entries == MAX_PREFIXES
    assert info.prefix_cache_misses == MAX_PREFIXES + 2


def test_unloading_the_model_drops_its_prefixes(tiny_model_dir, monkeypatch):
    requests = [_request(_version(), question) for question in QUESTIONS[:2]]
    expected = _uncached(tiny_model_dir, requests, monkeypatch)
    _ask(tiny_model_dir, requests[0])
    assert _info(tiny_model_dir).prefix_cache_entries == 1
    scheduler = runtime._scheduler(str(tiny_model_dir), optimize=True)

    unload_model(model_path=str(tiny_model_dir))

    assert loaded_models() == []
    assert (scheduler.prefix_entries, scheduler.prefix_bytes) == (0, 0)
    result = _ask(tiny_model_dir, requests[1])
    assert result.cached_prompt_tokens == 0
    assert _texts([result]) == _texts([expected[1]])
    info = _info(tiny_model_dir)
    assert (info.prefix_cache_hits, info.prefix_cache_misses, info.prefix_cache_entries) == (
        0,
        1,
        1,
    )


def test_switching_the_cache_off_empties_it(tiny_model_dir, monkeypatch):
    request = _request(_version(), QUESTIONS[0])
    cached = _ask(tiny_model_dir, request)
    assert _info(tiny_model_dir).prefix_cache_entries == 1
    monkeypatch.setenv(PREFIX_CACHE_MB_ENV, "0")

    off = _ask(tiny_model_dir, request)

    assert off.cached_prompt_tokens == 0
    assert _texts([off]) == _texts([cached])
    info = _info(tiny_model_dir)
    assert (info.prefix_cache_entries, info.prefix_cache_bytes) == (0, 0)
    assert (info.prefix_cache_hits, info.prefix_cache_misses) == (0, 1)


def test_a_template_that_renders_the_earlier_turns_otherwise_shares_nothing(
    tiny_model_dir, tmp_path, monkeypatch
):
    # This template writes the number of messages first, so the prefix templated on its own
    # is not the start of the prompt: caching it would answer from the wrong keys.
    model_dir = tmp_path / "counting-template"
    shutil.copytree(tiny_model_dir, model_dir)
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{{ messages | length }} " + config["chat_template"]
    config_path.write_text(json.dumps(config))
    requests = [_request(_version(), question) for question in QUESTIONS[:2]]
    expected = _uncached(model_dir, requests, monkeypatch)

    results = [_ask(model_dir, request) for request in requests]

    assert _texts(results) == _texts(expected)
    assert [r.cached_prompt_tokens for r in results] == [0, 0]
    info = _info(model_dir)
    assert (info.prefix_cache_hits, info.prefix_cache_misses) == (0, 0)


def test_a_bad_budget_is_a_clear_error(tiny_model_dir, monkeypatch):
    monkeypatch.setenv(PREFIX_CACHE_MB_ENV, "a lot")

    with pytest.raises(GenerationError, match=f"{PREFIX_CACHE_MB_ENV} must be a number"):
        _ask(tiny_model_dir, _request(_version(), QUESTIONS[0]))


# The real default model --------------------------------------------------------------------

QA_DEMOS = (
    ("What is the capital of France?", "Paris"),
    ("What is 3 + 4?", "7"),
    ("What colour is the sky on a clear day?", "blue"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("What is the opposite of hot?", "cold"),
    ("How many legs does a spider have?", "8"),
    ("What gas do plants take in from the air?", "carbon dioxide"),
    ("What is the largest ocean on Earth?", "the Pacific Ocean"),
)
QA_QUESTIONS = (
    "What is the capital of Italy?",
    "What is 5 + 6?",
    "What colour is grass?",
    "Who wrote Hamlet?",
    "What is the opposite of up?",
)


def _qa_request(question: str) -> dict:
    """A `qa` request exactly as the compact adapter writes it, with eight demos."""
    spec = next(entry["spec"] for entry in SIGNATURES if entry["name"] == "qa")
    signature = signature_class_build(name="qa", behaviour=spec)
    demos = [{"question": q, "answer": a} for q, a in QA_DEMOS]
    messages = CompactAdapter().format(signature, demos, {"question": question})
    prefill = messages.pop()["content"]
    return {"messages": messages, "assistant_prefix": prefill, "max_tokens": 16, "stop": ["\n"]}


@pytest.mark.slow_model
def test_qa_with_eight_demos_on_the_default_model(default_model_dir, monkeypatch):
    requests = [_qa_request(question) for question in QA_QUESTIONS]
    expected = _uncached(default_model_dir, requests, monkeypatch)

    results = [_ask(default_model_dir, request) for request in requests]

    assert _texts(results) == _texts(expected)
    prefix = results[1].cached_prompt_tokens
    # Most of the prompt is the shared instructions and demos.
    assert prefix > 0.8 * results[1].prompt_tokens
    assert [r.cached_prompt_tokens for r in results] == [0] + [prefix] * (len(results) - 1)
    assert all(result.text.strip() for result in results)
