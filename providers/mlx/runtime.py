"""The process-wide MLX model cache and the per-model generation scheduler.

MLX must not be driven from several threads at once, yet a worker serves several executions
at a time. So each loaded model gets one scheduler thread that owns every MLX call for it:
it loads the model, and it runs mlx-lm's continuous-batching `BatchGenerator`, admitting
requests as they arrive and stepping all of them together: a request that arrives while a
batch is decoding joins it at the next step. Callers (any thread) tokenize their prompt, queue
a request, wait for its tokens and decode them.

Per generated token the scheduler does what raw `batch_generate` does (keep the token) and,
for a request with stop sequences, one look-up: only a token whose text holds the last
character of a stop sequence can complete one, so the request's text is decoded only then
(about once per request for a line-break stop), never under a lock taken per token.

Batching pays on the CPU because decoding one token is bound by reading every weight from
memory (and by per-operation overhead), not by arithmetic: a batch shares both, so eight
sequences step in little more time than one (see BENCHMARKS.md).

Each scheduler also keeps the key-value cache of shared prompt prefixes (mlx-lm's prompt
cache). A request's shared prefix is the chat-templated text of every message before its last
user turn: the system line and the demos of a compiled signature version, or the conversation
so far in a chat. Demos make prompts several times longer, and every request of one version
repeats them, so a request whose prefix is cached prefills only its own tokens. A missing
prefix is computed once, in one forward pass, and each request starts from a copy of it.

The key is the prefix's tokens, so there is nothing to invalidate: a new version of a
signature (other demos, other instructions) has another prefix, and the old one ages out of
the least-recently-used cache, which is bounded in bytes (`DSPY_TOOLKIT_MLX_PREFIX_CACHE_MB`,
read at call time; 0 switches the cache off) and in entries. Unloading a model drops its
prefixes.
"""

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# MLX is imported after this package's __init__, which puts the fast BLAS in first.
import mlx.core as mx
import mlx.nn as nn
import mlx.utils
import mlx_lm
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import LRUPromptCache, make_prompt_cache
from mlx_lm.sample_utils import make_sampler
from mlx_lm.utils import dequantize_model

from core import env
from providers.events import LoadedModel, send_model_loaded, send_model_unloaded
from providers.mlx.hardware import DEQUANTIZED, cpu_optimizations, mlx_backend

# Requests stepped together at most. Eight covers the worker's concurrency; larger batches
# add latency to every member for little extra throughput on two cores.
DEFAULT_MAX_BATCH_SIZE = 8
MAX_BATCH_SIZE_ENV = "DSPY_TOOLKIT_MLX_MAX_BATCH"

FINISH_STOP = "stop"

# Megabytes (10**6 bytes) of cached prompt prefixes per loaded model; 0 switches it off.
DEFAULT_PREFIX_CACHE_MB = 256.0
PREFIX_CACHE_MB_ENV = "DSPY_TOOLKIT_MLX_PREFIX_CACHE_MB"
# Prefixes kept per model at most, whatever their size: one per signature version in use
# (and per conversation in a chat), so a few dozen cover a service's working set.
MAX_PREFIXES = 32
# Shorter prefixes are not cached. A hit costs less than prefilling one token (copying and
# merging a cache, BENCHMARKS.md), but every entry holds keys and values for at least 256
# tokens (mlx-lm allocates in steps of 256; 11.8 MB for SmolLM2-135M): a role header or an
# empty system turn is not worth that, a signature's instructions (20 tokens and more) are.
MIN_PREFIX_TOKENS = 16
# Tokens per forward pass when a prefix is filled, as mlx-lm prefills prompts.
PREFILL_STEP = 2048

# Held around every MLX call of every scheduler: models loaded side by side in one process
# take turns instead of driving MLX from two threads.
_MLX_LOCK = threading.Lock()


class GenerationError(RuntimeError):
    """Generation failed inside MLX; the message says why."""


class ModelLoadError(GenerationError):
    """The model directory could not be loaded."""


@dataclass(frozen=True)
class GenerationResult:
    """One finished generation.

    `text` excludes the assistant prefix and any stop sequence; `finish_reason` is "stop"
    (end of sequence or a stop sequence) or "length" (max_tokens reached).
    `cached_prompt_tokens` counts the prompt's leading tokens that came from the prefix cache
    instead of being prefilled for this request (0 when none of its prefix was cached yet, it
    was too short, or the cache is off); `prompt_tokens` counts them too. `peak_memory_mb`
    is MLX's peak for the process since the model's scheduler last went idle, so it bounds
    this request's peak and includes the weights. `duration_s` runs from submission to the
    last token, queueing included.
    """

    text: str
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int
    peak_memory_mb: float
    finish_reason: str
    applied_optimizations: tuple[str, ...]
    duration_s: float


@dataclass(frozen=True)
class LoadedModelInfo:
    """A loaded model and what it served. Prefix cache hits are requests that started from a
    cached prefix (all of it, or all but a few tokens they prefilled with their own); misses
    are requests whose prefix had to be computed first (wholly or in part); requests without
    a prefix worth caching count as neither. Entries and bytes are the prefixes held now.
    `requests_joined_running` counts requests admitted into a batch that already held others
    (continuous batching: they joined at the next step instead of waiting for it to end)."""

    path: str
    optimize: bool
    applied_optimizations: tuple[str, ...]
    load_duration_s: float
    requests_received: int
    requests_served: int
    largest_batch: int
    requests_joined_running: int
    prefix_cache_hits: int
    prefix_cache_misses: int
    prefix_cache_entries: int
    prefix_cache_bytes: int


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    # The prompt's shared prefix (a strict prefix of it), when one is worth caching.
    prefix: tuple[int, ...] | None
    max_tokens: int
    sampler: Callable[[mx.array], mx.array]
    stop: tuple[str, ...]
    submitted: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    cached_tokens: int = 0
    # Set by the scheduler when the request finishes. `text` only when a stop sequence ended
    # it (the scheduler decoded it to find the cut); otherwise the caller decodes `tokens`.
    finish_reason: str | None = None
    text: str | None = None
    finished: float = 0.0
    peak_memory_mb: float = 0.0
    # The last character of each stop sequence, which the token completing it must carry. A
    # stop that ends in a space is looked for at every token: SentencePiece tokenizers drop
    # the leading space of a token decoded on its own.
    stop_ends: frozenset[str] = field(init=False)
    stop_ends_ascii: bool = field(init=False)
    stop_at_every_token: bool = field(init=False)

    def __post_init__(self) -> None:
        self.stop_ends = frozenset(stop[-1] for stop in self.stop)
        self.stop_ends_ascii = all(end.isascii() for end in self.stop_ends)
        self.stop_at_every_token = " " in self.stop_ends


_STOP = object()


class _SchedulerClosed(Exception):
    """The scheduler was unloaded between the cache lookup and the submission."""


def _max_batch_size() -> int:
    # Read on every scheduling round, so a benchmark can switch batching off and on.
    return max(1, env.get_int(MAX_BATCH_SIZE_ENV, DEFAULT_MAX_BATCH_SIZE))


def prefix_cache_limit_bytes() -> int:
    """The byte budget of each loaded model's prefix cache now (0: the cache is off)."""
    raw = env.get(PREFIX_CACHE_MB_ENV)
    try:
        megabytes = DEFAULT_PREFIX_CACHE_MB if raw is None else float(raw)
    except ValueError:
        raise GenerationError(
            f"{PREFIX_CACHE_MB_ENV} must be a number of megabytes, not {raw!r}"
        ) from None
    return max(0, int(megabytes * 1e6))


def _float32_bytes(model: nn.Module) -> int:
    """Size of the model's weights once every parameter is float32."""
    total = 0
    for _name, module in model.named_modules():
        bits = getattr(module, "bits", None)
        for name, array in module.parameters().items():
            if not isinstance(array, mx.array):
                continue
            if bits and name == "weight":
                total += array.size * 32 // bits * 4
            elif not (bits and name in ("scales", "biases")):
                total += array.size * 4
    return total


def _is_quantized(model: nn.Module) -> bool:
    return any(hasattr(module, "bits") for _name, module in model.named_modules())


def load_optimized(path: str, *, optimize: bool) -> tuple[nn.Module, Any, tuple[str, ...]]:
    """Load a model directory as the cache does: (model, tokenizer, applied optimisations).

    The schedulers call it; so does the benchmark, to time mlx-lm on exactly these weights.
    """
    model, tokenizer = mlx_lm.load(path)
    applied: list[str] = []
    if optimize and mlx_backend() == "cpu":
        planned = cpu_optimizations(dequantized_bytes=_float32_bytes(model))
        # MLX's quantized CPU kernels are generic loops; float32 weights go through the
        # fast BLAS instead (prefill about 10x, decode about 1.5x faster, BENCHMARKS.md).
        if DEQUANTIZED in planned and _is_quantized(model):
            model = dequantize_model(model)
            model.set_dtype(mx.float32)
            applied.append(DEQUANTIZED)
        applied.extend(name for name in planned if name != DEQUANTIZED)
    mx.eval(model.parameters())
    return model, tokenizer, tuple(applied)


class _ModelScheduler(threading.Thread):
    """Owns one loaded model and every MLX call made with it."""

    def __init__(self, *, path: str, optimize: bool) -> None:
        super().__init__(name=f"mlx-scheduler:{Path(path).name}", daemon=True)
        self.path = path
        self.optimize = optimize
        self.loaded = threading.Event()
        self.load_error: BaseException | None = None
        self.tokenizer: Any = None
        # transformers' fast tokenizers are not safe to call from two threads at once
        # ("Already borrowed"): callers encode and this thread decodes.
        self.tokenizer_lock = threading.Lock()
        self.applied: tuple[str, ...] = ()
        self.load_duration_s = 0.0
        self.held: LoadedModel | None = None
        self.requests_received = 0
        self.requests_served = 0
        self.largest_batch = 0
        self.requests_joined = 0
        self.prefix_hits = 0
        self.prefix_misses = 0
        self.prefix_entries = 0
        self.prefix_bytes = 0
        self._submit_lock = threading.Lock()
        self._closed = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Owned by the scheduler thread: requests in the batch (by generator uid), being
        # inserted into it, and waiting for room.
        self._active: dict[int, _Request] = {}
        self._waiting: deque[_Request] = deque()
        self._admitting: list[_Request] = []
        self._samplers: dict[tuple[float, float], Callable[[mx.array], mx.array]] = {}
        self._samplers_lock = threading.Lock()
        # Owned by the scheduler thread: this model's cached prompt prefixes, and the text of
        # each token id decoded on its own (filled as tokens are first generated).
        self._prefixes = LRUPromptCache(max_size=MAX_PREFIXES)
        self._pieces: dict[int, str] = {}

    # Called from any thread.

    def sampler(self, *, temperature: float, top_p: float) -> Callable[[mx.array], mx.array]:
        # One object per setting: BatchGenerator samples a whole batch in one call when its
        # members share the sampler object, and row by row otherwise.
        key = (temperature, top_p if 0.0 < top_p < 1.0 else 0.0)
        with self._samplers_lock:
            if key not in self._samplers:
                self._samplers[key] = make_sampler(temp=key[0], top_p=key[1])
            return self._samplers[key]

    def submit(self, request: _Request) -> GenerationResult:
        with self._submit_lock:
            if self._closed:
                raise _SchedulerClosed
            self.requests_received += 1
            self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        text = request.text
        if text is None:
            # Decoded here, once, rather than by the scheduler between two decoding steps.
            with self.tokenizer_lock:
                text = self.tokenizer.decode(request.tokens)
        assert request.finish_reason is not None
        return GenerationResult(
            text=text,
            prompt_tokens=len(request.prompt),
            cached_prompt_tokens=request.cached_tokens,
            completion_tokens=len(request.tokens),
            peak_memory_mb=request.peak_memory_mb,
            finish_reason=request.finish_reason,
            applied_optimizations=self.applied,
            duration_s=request.finished - request.submitted,
        )

    def stop(self) -> None:
        # Under the lock, so no request can be queued behind the stop and never be served.
        with self._submit_lock:
            self._closed = True
            self._queue.put(_STOP)

    # The scheduler thread.

    def run(self) -> None:
        started = time.perf_counter()
        try:
            with _MLX_LOCK:
                self.model, self.tokenizer, self.applied = load_optimized(
                    self.path, optimize=self.optimize
                )
        except Exception as exc:
            self.load_error = ModelLoadError(f"cannot load the model at {self.path}: {exc}")
            self.load_error.__cause__ = exc
            self.loaded.set()
            return
        self.load_duration_s = time.perf_counter() - started
        self.held = LoadedModel(
            model=Path(self.path).name,
            resident_bytes=sum(
                array.nbytes for _name, array in mlx.utils.tree_flatten(self.model.parameters())
            ),
        )
        # Before the waiting callers go on, so that the load is counted when they see it.
        send_model_loaded(self.held, load_duration_s=self.load_duration_s)
        self.loaded.set()
        self._serve()

    def _new_generator(self) -> BatchGenerator:
        size = _max_batch_size()
        return BatchGenerator(
            self.model,
            stop_tokens=[[token] for token in self.tokenizer.eos_token_ids],
            completion_batch_size=size,
            prefill_batch_size=size,
        )

    def _serve(self) -> None:
        try:
            self._schedule()
        finally:
            # Whatever ended the loop, nobody may be left waiting for an answer.
            self._fail(GenerationError("the model's scheduler stopped"))
            # Unloading drops the prefixes with the model, before MLX's cache is cleared.
            self._prefixes.trim_to(n_sequences=0)
            self._prefix_figures()

    def _fail(self, error: GenerationError, *, waiting_too: bool = True) -> None:
        failed = [*self._active.values(), *self._admitting]
        if waiting_too:
            failed += self._waiting
            self._waiting.clear()
        for request in failed:
            request.error = error
            request.done.set()
        self._active.clear()
        self._admitting.clear()

    def _take_queued(self, *, block: bool) -> bool:
        """Move queued requests to the waiting line; return False once asked to stop."""
        running = True
        while True:
            try:
                item = self._queue.get(block=block)
            except queue.Empty:
                return running
            block = False
            if item is _STOP:
                running = False
            else:
                self._waiting.append(item)

    def _schedule(self) -> None:
        generator: BatchGenerator | None = None
        running = True
        while running or self._active or self._waiting:
            if not self._active and not self._waiting:
                running = self._take_queued(block=True)
                # A new busy period: peak memory is reported per period, which bounds the
                # peak of every request that ran in it.
                mx.reset_peak_memory()
                if not self._waiting:
                    continue
            try:
                with _MLX_LOCK:
                    # Under the lock: whatever arrived during the last step, or while another
                    # model's scheduler held the lock, is admitted at this step.
                    running = self._take_queued(block=False) and running
                    generator = generator or self._new_generator()
                    self._step(generator)
            except Exception as exc:
                error = GenerationError(f"generation failed: {exc}")
                error.__cause__ = exc
                self._fail(error, waiting_too=False)
                generator = None
            if not self._active and not self._waiting and generator is not None:
                generator.close()
                generator = None

    def _step(self, generator: BatchGenerator) -> None:
        """Admit waiting requests up to the batch size, then advance the batch one step."""
        admit = min(len(self._waiting), _max_batch_size() - len(self._active))
        if admit > 0:
            if self._active:
                self.requests_joined += admit
            self._admitting = [self._waiting.popleft() for _ in range(admit)]
            caches = self._prefix_caches(self._admitting, generator)
            # A request with a cached prefix prefills only the tokens after it; the rest of
            # the batch prefills whole prompts from fresh caches (the generator merges both).
            uids = generator.insert(
                [
                    request.prompt[covered:]
                    for request, (_cache, covered) in zip(self._admitting, caches, strict=True)
                ],
                max_tokens=[request.max_tokens for request in self._admitting],
                caches=[cache for cache, _covered in caches],
                all_tokens=[
                    request.prompt[:covered]
                    for request, (_cache, covered) in zip(self._admitting, caches, strict=True)
                ],
                samplers=[request.sampler for request in self._admitting],
            )
            self._active.update(zip(uids, self._admitting, strict=True))
            self._admitting = []
            self.largest_batch = max(self.largest_batch, len(self._active))
        _prompt_responses, responses = generator.next()
        stopped: list[int] = []
        for response in responses:
            request = self._active[response.uid]
            if not self._advance(request, response.token, response.finish_reason):
                continue
            del self._active[response.uid]
            if response.finish_reason is None:
                # Ended by a stop sequence: the generator still holds it.
                stopped.append(response.uid)
        if stopped:
            # One removal per step, as the generator itself drops what it finished.
            generator.remove(stopped)

    def _prefix_caches(
        self, requests: list[_Request], generator: BatchGenerator
    ) -> list[tuple[list[Any] | None, int]]:
        """Each request's starting cache and how many of its prompt's tokens it holds (None
        and 0 for a request that prefills its whole prompt)."""
        limit = prefix_cache_limit_bytes()
        if limit == 0 and len(self._prefixes):
            self._prefixes.trim_to(n_sequences=0)
            self._prefix_figures()
        # Looked up (and computed) once per distinct prefix in this round.
        found: dict[tuple[int, ...], tuple[list[Any], int, int, bool]] = {}
        caches: list[tuple[list[Any] | None, int]] = []
        for request in requests:
            if request.prefix is None or limit == 0:
                caches.append((None, 0))
                continue
            if request.prefix not in found:
                found[request.prefix] = self._prefix_cache(request.prefix, generator, limit)
            cache, covered, reused, computed = found[request.prefix]
            request.cached_tokens = reused
            if computed:
                self.prefix_misses += 1
            else:
                self.prefix_hits += 1
            # No copy: the generator only reads the caches it is given, merging them into new
            # batch arrays (batch generation "won't update the caches in place", mlx-lm's
            # `batch_generate`), so requests of one round share the entry itself.
            caches.append((cache, covered))
        return caches

    def _prefix_cache(
        self, prefix: tuple[int, ...], generator: BatchGenerator, limit: int
    ) -> tuple[list[Any], int, int, bool]:
        """A prompt cache for `prefix`: (cache, tokens it holds, how many of them were cached
        already, whether any had to be computed).

        mlx-lm's nearest entry may share only the first tokens of the prefix (an earlier turn
        of a chat, a version with the same instructions and other demos): the tokens it lacks
        are computed, and the whole prefix is kept. When it lacks fewer than
        `MIN_PREFIX_TOKENS` the request prefills them with its own tokens instead: mlx-lm
        keeps only the longest of prefixes that extend one another, so a version's prefix
        that begins another's (no demos and eight demos, same instructions) is served from
        the longer entry, trimmed, short of its last token.
        """
        tokens = list(prefix)
        cache, rest = self._prefixes.fetch_nearest_cache(self.path, tokens)
        reused = len(tokens) - len(rest)
        if cache is None or reused < MIN_PREFIX_TOKENS:
            # A role header in common, say: not worth a copy.
            cache, reused = make_prompt_cache(self.model), 0
        missing = tokens[reused:]
        if missing and len(missing) < MIN_PREFIX_TOKENS:
            return cache, reused, reused, False
        if missing:
            with mx.stream(generator.stream):
                for start in range(0, len(missing), PREFILL_STEP):
                    chunk = mx.array(missing[start : start + PREFILL_STEP])[None]
                    self.model(chunk, cache=cache)
                    # Only the keys and values: the logits of a prefix are never needed.
                    mx.eval([layer.state for layer in cache])
        # Inserting again also makes a hit the most recently used entry: mlx-lm's cache orders
        # its entries by insertion only. A prefix larger than the whole budget would evict
        # everything else and then itself, so it is used once and not kept.
        if sum(layer.nbytes for layer in cache) <= limit:
            self._prefixes.insert_cache(self.path, tokens, cache)
            self._prefixes.trim_to(n_sequences=MAX_PREFIXES, n_bytes=limit)
            self._prefix_figures()
        return cache, len(tokens), reused, bool(missing)

    def _prefix_figures(self) -> None:
        # Copied into plain attributes, which other threads may read at any time.
        self.prefix_entries = len(self._prefixes)
        self.prefix_bytes = self._prefixes.nbytes

    def _advance(self, request: _Request, token: int, finish_reason: str | None) -> bool:
        """Take one generated token; finish the request and return True when it is done."""
        if finish_reason != FINISH_STOP:
            # The generator reports an end-of-sequence token with "stop"; it is not text.
            request.tokens.append(token)
            if request.stop and self._may_complete_stop(request, token):
                with self.tokenizer_lock:
                    text = self.tokenizer.decode(request.tokens)
                cut = min(
                    (index for stop in request.stop if (index := text.find(stop)) >= 0),
                    default=None,
                )
                if cut is not None:
                    request.text = text[:cut]
                    finish_reason = FINISH_STOP
        if finish_reason is None:
            return False
        request.finish_reason = finish_reason
        request.finished = time.perf_counter()
        request.peak_memory_mb = mx.get_peak_memory() / 1e6
        self.requests_served += 1
        request.done.set()
        return True

    def _may_complete_stop(self, request: _Request, token: int) -> bool:
        """Whether `token` may have completed one of the request's stop sequences.

        A stop sequence absent before `token` and present after it ends in the text `token`
        added, so that text holds its last character. An ASCII character is one byte of the
        token, so it is in the token's own text (a byte-level token that is part of a longer
        character decodes to a replacement character, never to ASCII); a longer character is
        whole there or leaves a replacement character. Any other token cannot complete one,
        and the request's text is not decoded.
        """
        if request.stop_at_every_token:
            return True
        piece = self._pieces.get(token)
        if piece is None:
            with self.tokenizer_lock:
                piece = self._pieces[token] = self.tokenizer.decode([token])
        if any(end in piece for end in request.stop_ends):
            return True
        return not request.stop_ends_ascii and "\ufffd" in piece


_cache: dict[tuple[str, bool], _ModelScheduler] = {}
_cache_lock = threading.Lock()


# Whether this process has run MLX through the runtime; inherited by forked children.
_mlx_used = False
_forked_after_use = False


def _forget_after_fork() -> None:
    # A forked child inherits the cache but not the scheduler threads, nor MLX's own stream
    # threads: once the parent has run MLX, evaluation in the child hangs forever. Make that
    # a clear error instead (django-q2 forks its workers: load models inside the workers).
    global _cache_lock, _MLX_LOCK, _forked_after_use
    _forked_after_use = _mlx_used
    _cache.clear()
    _cache_lock = threading.Lock()
    _MLX_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _scheduler(model_path: str, *, optimize: bool) -> _ModelScheduler:
    """The scheduler of a loaded model, loading it on first use (one load per key)."""
    if _forked_after_use:
        raise GenerationError(
            "this process was forked from one that had run MLX, which cannot work in the"
            " child: load models only after the fork"
        )
    path = Path(model_path).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"no model directory at {model_path} (config.json missing)")
    key = (str(path), optimize)
    global _mlx_used
    _mlx_used = True
    with _cache_lock:
        scheduler = _cache.get(key)
        if scheduler is None:
            scheduler = _cache[key] = _ModelScheduler(path=key[0], optimize=optimize)
            scheduler.start()
    scheduler.loaded.wait()
    if scheduler.load_error is not None:
        with _cache_lock:
            if _cache.get(key) is scheduler:
                del _cache[key]
        raise scheduler.load_error
    return scheduler


def _prompt(tokenizer: Any, messages: list[dict[str, str]], assistant_prefix: str) -> list[int]:
    if not messages:
        raise ValueError("messages must not be empty")
    if tokenizer.chat_template is None:
        raise ModelLoadError("the model has no chat template (tokenizer_config.json)")
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:
        # Jinja errors: a missing key, or roles in an order the template refuses.
        raise ValueError(f"the chat template rejected the messages: {exc}") from exc
    # The template already wrote any special tokens, BOS included.
    return tokenizer.encode(text + assistant_prefix, add_special_tokens=False)


def _shared_prefix(
    tokenizer: Any, messages: list[dict[str, str]], prompt: list[int]
) -> tuple[int, ...] | None:
    """The tokens of every message before the last user turn, when the prompt starts with
    exactly those tokens and they are worth caching; otherwise None."""
    last_user = max(
        (index for index, message in enumerate(messages) if message.get("role") == "user"),
        default=0,
    )
    if last_user == 0:
        return None
    try:
        text = tokenizer.apply_chat_template(
            messages[:last_user], add_generation_prompt=False, tokenize=False
        )
    except Exception:
        # A template may refuse a conversation cut short (say, one that must end with a
        # user turn): the request is fine, it just has no shareable prefix.
        return None
    prefix = tokenizer.encode(text, add_special_tokens=False)
    # ChatML-style templates end a turn cleanly, but a template may render the earlier
    # messages differently once the last turn is gone, and BPE may merge across the
    # boundary: only an exact token prefix has the same keys and values.
    if len(prefix) < MIN_PREFIX_TOKENS or len(prefix) >= len(prompt):
        return None
    if prompt[: len(prefix)] != prefix:
        return None
    return tuple(prefix)


def load_model(*, model_path: str, optimize: bool = True) -> LoadedModelInfo:
    """Load a model into the cache now (it is otherwise loaded by its first `generate`)."""
    scheduler = _scheduler(model_path, optimize=optimize)
    return _info(scheduler)


def generate(
    *,
    model_path: str,
    messages: list[dict[str, str]],
    assistant_prefix: str = "",
    max_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    optimize: bool = True,
) -> GenerationResult:
    """Generate the assistant's reply to `messages` with the model at `model_path`.

    The prompt is the model's chat template with the generation prompt, followed by
    `assistant_prefix`; the result's text excludes that prefix and ends before the first
    stop sequence. Safe to call from many threads: concurrent calls for one model are
    batched by its scheduler.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if temperature < 0:
        raise ValueError("temperature must not be negative")
    stops = tuple(sequence for sequence in stop or () if sequence)
    caching = prefix_cache_limit_bytes() > 0
    while True:
        scheduler = _scheduler(model_path, optimize=optimize)
        with scheduler.tokenizer_lock:
            prompt = _prompt(scheduler.tokenizer, messages, assistant_prefix)
            prefix = _shared_prefix(scheduler.tokenizer, messages, prompt) if caching else None
        if not prompt:
            raise ValueError("the prompt is empty")
        request = _Request(
            prompt=prompt,
            prefix=prefix,
            max_tokens=max_tokens,
            sampler=scheduler.sampler(temperature=temperature, top_p=top_p),
            stop=stops,
        )
        try:
            return scheduler.submit(request)
        except _SchedulerClosed:
            # Unloaded meanwhile (tests, benchmarks): the next lookup loads it afresh.
            continue


def _info(scheduler: _ModelScheduler) -> LoadedModelInfo:
    return LoadedModelInfo(
        path=scheduler.path,
        optimize=scheduler.optimize,
        applied_optimizations=scheduler.applied,
        load_duration_s=scheduler.load_duration_s,
        requests_received=scheduler.requests_received,
        requests_served=scheduler.requests_served,
        largest_batch=scheduler.largest_batch,
        requests_joined_running=scheduler.requests_joined,
        prefix_cache_hits=scheduler.prefix_hits,
        prefix_cache_misses=scheduler.prefix_misses,
        prefix_cache_entries=scheduler.prefix_entries,
        prefix_cache_bytes=scheduler.prefix_bytes,
    )


def loaded_models() -> list[LoadedModelInfo]:
    """The models this process holds, with what was applied at load and what they served."""
    with _cache_lock:
        schedulers = list(_cache.values())
    return [_info(scheduler) for scheduler in schedulers if scheduler.loaded.is_set()]


def _unload(schedulers: list[_ModelScheduler]) -> None:
    # Requests already queued are served before a scheduler stops.
    for scheduler in schedulers:
        scheduler.stop()
    for scheduler in schedulers:
        scheduler.join()
    mx.clear_cache()
    for scheduler in schedulers:
        if scheduler.held is not None:
            send_model_unloaded(scheduler.held)


def unload_model(*, model_path: str) -> None:
    """Drop a model (with and without optimisations) from the cache."""
    path = str(Path(model_path).expanduser().resolve())
    with _cache_lock:
        schedulers = [_cache.pop(key) for key in list(_cache) if key[0] == path]
    _unload(schedulers)


def unload_all() -> None:
    """Drop every loaded model (tests, benchmarks)."""
    with _cache_lock:
        schedulers = list(_cache.values())
        _cache.clear()
    _unload(schedulers)
