"""Benchmark of the MLX runtime's prefix cache: `qa` with 0 and 8 demos on the default model.

Each question goes the way an execution sends it: `dspy.Predict` of the library's `qa`
signature, the `CompactAdapter`, a `dspy.LM` over the project's `MLXEngine`, the runtime's
scheduler. With 8 demos the instructions and demos are most of the prompt and the same for
every question, which is what the cache keeps. Prints, and writes into BENCHMARKS.md:
- latency p50 and p95 over the questions at concurrency 1, with 0 and 8 demos, the cache off
  (`DSPY_TOOLKIT_MLX_PREFIX_CACHE_MB=0`) and on (runs off, on, on, off; within a run the two
  versions alternate question by question, so the machine's other load falls on both); and
  whether the answers with the cache are exactly those without it;
- the same at concurrency 4 (the scheduler batches the requests);
- what a cache hit costs against what one prefilled token costs (why short prefixes are not
  cached, `MIN_PREFIX_TOKENS`).

Target on the 2-core reference machine: 8 demos with the cache at most 1.2x the p50 latency of
0 demos. The machine may be shared: the load average is recorded.
"""

import argparse
import copy
import os
import platform
import queue
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import dspy  # noqa: E402
from benchmarks_file import BENCHMARKS_FILE, benchmarks_section_write  # noqa: E402
from dspy.utils.exceptions import AdapterParseError  # noqa: E402

from core import env  # noqa: E402
from providers.adapters import CompactAdapter  # noqa: E402
from providers.engines import EngineConfig, MLXEngine, collect_generation_stats  # noqa: E402

# Before MLX itself: importing the package puts the fast BLAS into the process first.
from providers.mlx import runtime  # noqa: E402
from providers.mlx.default_model import install_default_model  # noqa: E402
from providers.mlx.hardware import hardware_report  # noqa: E402
from registry.library import SIGNATURES  # noqa: E402
from registry.programs import signature_class_build  # noqa: E402

SECTION_START = "<!-- bench_prefix_cache: start -->"
SECTION_END = "<!-- bench_prefix_cache: end -->"

TARGET_RATIO = 1.2
CONCURRENT_CLIENTS = 4
DEMOS = (
    ("What is the capital of France?", "Paris"),
    ("What is 3 + 4?", "7"),
    ("What colour is the sky on a clear day?", "blue"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("What is the opposite of hot?", "cold"),
    ("How many legs does a spider have?", "8"),
    ("What gas do plants take in from the air?", "carbon dioxide"),
    ("What is the largest ocean on Earth?", "the Pacific Ocean"),
)
QUESTIONS = (
    "What is the capital of Italy?",
    "What is 5 + 6?",
    "What colour is grass?",
    "Who wrote Hamlet?",
    "What is the opposite of up?",
    "How many days are in a week?",
    "What is the capital of Japan?",
    "What is 9 - 2?",
    "What colour is a banana?",
    "Who painted the Mona Lisa?",
    "What is the opposite of wet?",
    "How many wheels does a bicycle have?",
    "What is the capital of Spain?",
    "What is 2 x 6?",
    "What planet do we live on?",
    "What is frozen water called?",
    "What is the opposite of early?",
    "How many months are in a year?",
    "What animal says moo?",
    "What is the capital of Germany?",
)
DEMO_COUNTS = (0, 8)
# (label, demos, prefix cache on)
VARIANTS = (
    ("0 demos", 0, False),
    ("0 demos", 0, True),
    ("8 demos", 8, False),
    ("8 demos", 8, True),
)
CONCURRENT_VARIANTS = (("0 demos", 0, True), ("8 demos", 8, False), ("8 demos", 8, True))


def progress(message: str) -> None:
    print(f"[bench_prefix_cache] {message}", flush=True)


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: a latency some request really had."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


def _cache(on: bool) -> None:
    # The runtime reads the budget at call time; 0 switches the cache off and empties it.
    if on:
        os.environ.pop(runtime.PREFIX_CACHE_MB_ENV, None)
    else:
        os.environ[runtime.PREFIX_CACHE_MB_ENV] = "0"


class Qa:
    """The library's `qa` version with its first `demos` demos, run as an execution runs it."""

    def __init__(self, *, model_path: Path) -> None:
        spec = next(entry["spec"] for entry in SIGNATURES if entry["name"] == "qa")
        self.signature = signature_class_build(name="qa", behaviour=spec)
        self.adapter = CompactAdapter()
        config = EngineConfig(
            name="bench",
            kind="mlx",
            model=model_path.name,
            max_tokens=spec["lm_defaults"]["max_tokens"],
            temperature=0.0,
            top_p=1.0,
            timeout_s=60.0,
            hardware_optimization=True,
            model_path=str(model_path),
        )
        # As the providers build it: no retries, no DSPy cache, so every call really runs.
        self.lm = dspy.LM(
            f"mlx/{config.name}",
            engine=MLXEngine(config=config),
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            num_retries=0,
            cache=False,
        )

    def predictor(self, demos: int) -> dspy.Predict:
        predictor = dspy.Predict(self.signature)
        predictor.demos = [dspy.Example(question=q, answer=a) for q, a in DEMOS[:demos]]
        return predictor

    def ask(self, predictor: dspy.Predict, question: str) -> dict:
        with collect_generation_stats() as stats, dspy.context(lm=self.lm, adapter=self.adapter):
            started = time.perf_counter()
            try:
                answer = predictor(question=question).answer
            except AdapterParseError:
                # An empty answer: still a timed call, and the same with and without the cache.
                answer = None
            latency = time.perf_counter() - started
        return {
            "question": question,
            "answer": answer,
            "latency_s": latency,
            "prompt_tokens": sum(stat.input_tokens for stat in stats),
            "completion_tokens": sum(stat.output_tokens for stat in stats),
        }


def _prefix_counters() -> tuple[int, int]:
    infos = runtime.loaded_models()
    return sum(i.prefix_cache_hits for i in infos), sum(i.prefix_cache_misses for i in infos)


def _sequential(qa: Qa, *, on: bool) -> dict[int, dict]:
    """Every question with 0 and with 8 demos, alternating, so that both sides of the ratio
    run under the same load; the cache setting cannot alternate (off empties it)."""
    _cache(on)
    predictors = {demos: qa.predictor(demos) for demos in DEMO_COUNTS}
    # The first question of a version computes its prefix (when the cache is on).
    firsts = {demos: qa.ask(predictor, QUESTIONS[0]) for demos, predictor in predictors.items()}
    hits, misses = _prefix_counters()
    answers: dict[int, list[dict]] = {demos: [] for demos in DEMO_COUNTS}
    for question in QUESTIONS:
        for demos, predictor in predictors.items():
            answers[demos].append(qa.ask(predictor, question))
    after = _prefix_counters()
    return {
        "hits": after[0] - hits,
        "misses": after[1] - misses,
        "by_demos": {
            demos: {"first_s": firsts[demos]["latency_s"], "answers": answers[demos]}
            for demos in DEMO_COUNTS
        },
    }


def _concurrent(qa: Qa, *, demos: int, on: bool) -> dict:
    _cache(on)
    predictor = qa.predictor(demos)
    qa.ask(predictor, QUESTIONS[0])
    pending: queue.SimpleQueue[str] = queue.SimpleQueue()
    for question in QUESTIONS:
        pending.put(question)
    answers: list[dict] = []

    def client() -> None:
        while True:
            try:
                question = pending.get_nowait()
            except queue.Empty:
                return
            answers.append(qa.ask(predictor, question))

    threads = [threading.Thread(target=client) for _ in range(CONCURRENT_CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"answers": answers, "wall_s": time.perf_counter() - started}


def _break_even(model_path: Path) -> dict:
    """What a hit costs (copying an entry, merging it into a batch cache) against the
    marginal cost of one prefilled token, with mlx-lm directly on the runtime's weights."""
    # Here, not at the top: MLX must load after `providers.mlx` has put the fast BLAS in.
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    model, _tokenizer, _applied = runtime.load_optimized(str(model_path), optimize=True)

    def fill(tokens: int) -> list:
        cache = make_prompt_cache(model)
        model(mx.array([[100 + i for i in range(tokens)]]), cache=cache)
        mx.eval([layer.state for layer in cache])
        return cache

    def timed(action, repeats: int) -> float:
        action()
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            action()
            runs.append(time.perf_counter() - started)
        return statistics.median(runs)

    short, long = 16, 144
    per_token = (timed(lambda: fill(long), 5) - timed(lambda: fill(short), 5)) / (long - short)
    entry = fill(short)

    def hit() -> None:
        merged = [layer.merge([layer]) for layer in copy.deepcopy(entry)]
        mx.eval([layer.state for layer in merged])

    return {
        "per_token_s": per_token,
        "hit_s": timed(hit, 20),
        "entry_bytes": sum(layer.nbytes for layer in entry),
    }


def _figures(answers: list[dict]) -> dict:
    latencies = [answer["latency_s"] for answer in answers]
    return {
        "p50_s": statistics.median(latencies),
        "p95_s": _percentile(latencies, 0.95),
        "prompt_tokens": round(statistics.median(a["prompt_tokens"] for a in answers)),
        "completion_tokens": statistics.mean(a["completion_tokens"] for a in answers),
    }


def measure(model_path: Path) -> dict:
    qa = Qa(model_path=model_path)
    runtime.load_model(model_path=str(model_path))
    # A first call of every code path (DSPy, the adapter, the generator) outside the timings.
    qa.ask(qa.predictor(8), QUESTIONS[0])
    runs: dict[tuple[int, bool], list[dict]] = {}
    hits = misses = 0
    for on in (False, True, True, False):
        progress(f"concurrency 1: 0 and 8 demos, cache {'on' if on else 'off'}")
        run = _sequential(qa, on=on)
        hits, misses = hits + run["hits"], misses + run["misses"]
        for demos, figures in run["by_demos"].items():
            runs.setdefault((demos, on), []).append(figures)
    sequential = []
    for label, demos, on in VARIANTS:
        passes = runs[(demos, on)]
        answers = [answer for run in passes for answer in run["answers"]]
        sequential.append(
            {
                "label": label,
                "demos": demos,
                "on": on,
                **_figures(answers),
                "first_s": statistics.median(run["first_s"] for run in passes),
                "answers": [answer["answer"] for answer in passes[0]["answers"]],
            }
        )
    concurrent = []
    for label, demos, on in CONCURRENT_VARIANTS:
        progress(f"concurrency {CONCURRENT_CLIENTS}: {label}, cache {'on' if on else 'off'}")
        run = _concurrent(qa, demos=demos, on=on)
        concurrent.append(
            {"label": label, "on": on, **_figures(run["answers"]), "wall_s": run["wall_s"]}
        )
    _cache(True)
    runtime.unload_all()
    progress("what a hit costs")
    return {
        "sequential": sequential,
        "hits": hits,
        "misses": misses,
        "concurrent": concurrent,
        "break_even": _break_even(model_path),
    }


def _row(figures: dict, *extra: str) -> str:
    cells = [
        figures["label"],
        "on" if figures["on"] else "off",
        str(figures["prompt_tokens"]),
        f"{figures['completion_tokens']:.1f}",
        f"{figures['p50_s'] * 1000:.0f}",
        f"{figures['p95_s'] * 1000:.0f}",
        *extra,
    ]
    return "| " + " | ".join(cells) + " |"


def section(results: dict, *, load: tuple[float, float]) -> str:
    hardware = hardware_report()
    by_variant = {(row["demos"], row["on"]): row for row in results["sequential"]}
    ratio = by_variant[(8, True)]["p50_s"] / by_variant[(0, True)]["p50_s"]
    ratio_off = by_variant[(8, False)]["p50_s"] / by_variant[(0, False)]["p50_s"]
    identical = all(
        by_variant[(demos, True)]["answers"] == by_variant[(demos, False)]["answers"]
        for demos in DEMO_COUNTS
    )
    sequential = "\n".join(
        _row(row, f"{row['first_s'] * 1000:.0f}") for row in results["sequential"]
    )
    concurrent = "\n".join(_row(row, f"{row['wall_s']:.1f}") for row in results["concurrent"])
    by_concurrent = {(row["label"], row["on"]): row for row in results["concurrent"]}
    concurrent_ratio = (
        by_concurrent[("8 demos", True)]["p50_s"] / by_concurrent[("0 demos", True)]["p50_s"]
    )
    eight = by_variant[(8, True)]["answers"]
    sample = ", ".join(f"{q!r} -> {a!r}" for q, a in list(zip(QUESTIONS, eight, strict=True))[:4])
    cost = results["break_even"]
    verdict = "met" if ratio <= TARGET_RATIO else "not met"
    return f"""{SECTION_START}
## Prefix cache: `qa` with 0 and 8 demos (`bench/bench_prefix_cache.py`)

Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {hardware["cpu_count"]} CPUs ({hardware["machine"]}),
MLX {hardware["mlx_version"]} on the `{hardware["mlx_backend"]}` backend, mlx-lm
{hardware["mlx_lm_version"]}, Python {platform.python_version()}. Load average (1 min) at start
and end: {load[0]:.2f} / {load[1]:.2f}; the machine was shared, so the figures are noisy.
Each question goes through `dspy.Predict` of the library's `qa`, the `CompactAdapter`,
`dspy.LM` over `MLXEngine` and the runtime's scheduler, greedy, short answers (stop at the
line break). {len(QUESTIONS)} questions per variant and run, four runs (cache off, on, on,
off), 0 and 8 demos alternating question by question so that both sides of the ratio share
the machine's load; latencies are whole calls, generated tokens a mean per question. The
first question of each version in a run is timed apart: with the cache on it computes the
version's prefix (a miss). Timed requests with the cache on: {results["hits"]} hits,
{results["misses"]} misses.

### Concurrency 1

| demos | prefix cache | prompt tokens | generated tokens | p50 ms | p95 ms | first question ms |
|---|---|---|---|---|---|---|
{sequential}

8 demos with the cache cost **{ratio:.2f}x** the p50 of 0 demos (without the cache:
{ratio_off:.2f}x). Target at most {TARGET_RATIO}x: **{verdict}**.
Answers with the cache identical to those without it: **{"yes" if identical else "no"}**
(for example, 8 demos: {sample}). The 0-demo prompt's shared prefix is the system line
alone; it is cached too (it is above `MIN_PREFIX_TOKENS`).

### Concurrency {CONCURRENT_CLIENTS} ({len(QUESTIONS)} questions, batched by the scheduler)

| demos | prefix cache | prompt tokens | generated tokens | p50 ms | p95 ms | wall s |
|---|---|---|---|---|---|---|
{concurrent}

8 demos with the cache / 0 demos: {concurrent_ratio:.2f}x at p50.

### What a hit costs

Copying a cached entry and merging it into a batch cache: {cost["hit_s"] * 1000:.2f} ms;
prefilling one more prompt token: {cost["per_token_s"] * 1000:.2f} ms (the difference between
144- and 16-token prefills, per token). Each entry holds keys and values for at least 256
tokens ({cost["entry_bytes"] / 1e6:.1f} MB for this model), so prefixes under
`MIN_PREFIX_TOKENS` ({runtime.MIN_PREFIX_TOKENS}) are not cached.
{SECTION_END}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: install the default model)")
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures without updating BENCHMARKS.md"
    )
    args, _ = parser.parse_known_args()
    load_start = os.getloadavg()[0]
    model_path = Path(args.model) if args.model else None
    if model_path is None:
        progress("installing the default model (idempotent)")
        model_path = install_default_model(models_dir=env.var_dir() / "models", progress=progress)
    results = measure(model_path)
    text = section(results, load=(load_start, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        benchmarks_section_write(text, start=SECTION_START, end=SECTION_END)
        progress(f"wrote {BENCHMARKS_FILE.name}")


if __name__ == "__main__":
    main()
