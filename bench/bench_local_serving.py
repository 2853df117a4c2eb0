"""Local serving of the library's `qa` on the default model, three ways, side by side in one run.

The same held-out questions (bench/heldout/qa.jsonl), the same prompt and the same token budget
(32 tokens, stop at the line break) at concurrency 1, 4 and 8:

- raw: mlx-lm in this process on the weights the toolkit loads (`load_optimized`),
  `mlx_lm.generate` at concurrency 1 and `batch_generate` on batches of 4 and 8, with exactly
  the prompt the toolkit sends: the shipped production version of `qa` (its demos included) is
  built as an execution builds it, the `CompactAdapter` formats it, and a recording engine
  keeps what would reach the model. The line break ends a raw generation as an end token does
  (every token whose text holds one), so each way generates the same tokens;
- server: `mlx_lm.server`, started here on the same model directory (served as it is shipped,
  with the fast BLAS in its environment), `/v1/completions` with that prompt text from
  concurrent HTTP clients;
- api: a fresh quick-start service (`bench/service.py`), sync `POST /api/v1/dspy/execute` of
  `qa` from concurrent client threads.

The toolkit's MLX runtime is also measured in this process (`runtime.generate`, what the
inference worker calls), in its current version and in the version of `--before` (a git
revision, loaded from `git show` as a module of its own), alternately, so that both meet the
same load; with the tiny random-weight model too, where the model is so fast that the
scheduler's own work per token shows.

Prints the figures, writes a section of BENCHMARKS.md and the raw figures as JSON to
var/bench/local_serving.json (read by the plot script). Targets (issue 11): the API's p50 at
concurrency 1 within 50 ms of raw, its requests/s at concurrency 8 at least 0.95x raw, and
ahead of `mlx_lm.server`. The machine may be shared: the load average is recorded.
"""

import argparse
import contextlib
import copy
import functools
import importlib.util
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import dspy  # noqa: E402
from benchmarks_file import BENCHMARKS_FILE, benchmarks_section_write  # noqa: E402
from dspy.lm15 import Message, Response, Usage  # noqa: E402
from service import Service, execute  # noqa: E402

from core import env  # noqa: E402
from providers.adapters import CompactAdapter  # noqa: E402
from providers.engines import request_messages  # noqa: E402

# Before MLX itself: importing the package puts the fast BLAS into the process first.
from providers.mlx import runtime  # noqa: E402
from providers.mlx.blas import worker_environment  # noqa: E402
from providers.mlx.default_model import install_default_model  # noqa: E402
from providers.mlx.hardware import hardware_report  # noqa: E402
from registry.library import SIGNATURES  # noqa: E402
from registry.programs import program_build  # noqa: E402
from tests.support.processes import stop as stop_process  # noqa: E402
from tests.support.servers import free_port  # noqa: E402
from tests.support.tiny_model import build_tiny_model  # noqa: E402

SECTION_START = "<!-- bench_local_serving: start -->"
SECTION_END = "<!-- bench_local_serving: end -->"
JSON_PATH = REPO_ROOT / "var" / "bench" / "local_serving.json"
HELDOUT = REPO_ROOT / "bench" / "heldout" / "qa.jsonl"
# Where the template library keeps the shipped optimized versions (registry.services.library).
LIBRARY_DATA_DIR = REPO_ROOT / "registry" / "library_data"

CONCURRENCY = (1, 4, 8)
# Requests timed per concurrency and round (each way sends the same ones), after one warm-up
# request; the rounds add up.
REQUESTS = {1: 6, 4: 8, 8: 16}
ROUNDS = 2
P50_TARGET_MS = 50.0
RPS_TARGET = 0.95
# The runtime as it was before the scheduler work of issue 11, for the before/after figures.
DEFAULT_BEFORE = "4ad7503"
# The tiny model's run: long generations with a stop sequence, so per-token work adds up.
TINY_CLIENTS = 8
TINY_TOKENS = 200
TINY_STOP = "###"
TINY_ROUNDS = 5


def progress(message: str) -> None:
    print(f"[bench_local_serving] {message}", flush=True)


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: a latency some request really had."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


@dataclass(frozen=True)
class QaRequest:
    """One LM call of `qa` as the toolkit makes it."""

    question: str
    messages: list[dict[str, str]]
    assistant_prefix: str
    max_tokens: int
    stop: list[str]
    temperature: float


class _Recorder:
    """A DSPy engine that keeps each request and answers like the model would."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def complete(self, request):
        messages, assistant_prefix = request_messages(request)
        settings = request.config
        self.requests.append(
            {
                "messages": messages,
                "assistant_prefix": assistant_prefix,
                "max_tokens": settings.max_tokens,
                "stop": list(settings.stop or ()),
                "temperature": settings.temperature or 0.0,
            }
        )
        return Response(
            id=None,
            model="recorder",
            message=Message.assistant(" Paris"),
            finish_reason="stop",
            usage=Usage(input_tokens=1, output_tokens=1),
        )

    def stream(self, request):
        raise NotImplementedError("the recorder answers whole requests only")

    def close(self) -> None:
        pass


def qa_requests(questions: list[str]) -> list[QaRequest]:
    """What the shipped production version of `qa` sends the model for each question."""
    entry = next(entry for entry in SIGNATURES if entry["name"] == "qa")
    compiled = json.loads((LIBRARY_DATA_DIR / "qa.compiled.json").read_text())
    behaviour = entry["spec"] | {"compiled_state": compiled["compiled_state"]}
    program = program_build(name="qa", behaviour=behaviour)
    recorder = _Recorder()
    defaults = entry["spec"]["lm_defaults"]
    lm = dspy.LM("mlx/recorder", engine=recorder, num_retries=0, cache=False, **defaults)
    requests = []
    for question in questions:
        with dspy.context(lm=lm, adapter=CompactAdapter()):
            program(question=question)
        [call] = recorder.requests
        recorder.requests.clear()
        requests.append(QaRequest(question=question, **call))
    return requests


def prompt_text(tokenizer, request: QaRequest) -> str:
    """The prompt as the runtime builds it: the chat template, then the assistant's pre-fill."""
    text = tokenizer.apply_chat_template(
        request.messages, add_generation_prompt=True, tokenize=False
    )
    return text + request.assistant_prefix


# Driving one way at one concurrency ------------------------------------------------------


@dataclass
class Run:
    latencies_ms: list[float]
    wall_s: float
    answers: list[str]
    errors: int

    @classmethod
    def merged(cls, runs: list["Run"]) -> "Run":
        """Several runs of the same requests as one: every latency, the walls added up."""
        return cls(
            latencies_ms=[ms for run in runs for ms in run.latencies_ms],
            wall_s=sum(run.wall_s for run in runs),
            answers=[answer for run in runs for answer in run.answers],
            errors=sum(run.errors for run in runs),
        )

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p95(self) -> float:
        return _percentile(self.latencies_ms, 0.95)


def drive(call: Callable[[QaRequest], str | None], requests: list[QaRequest], clients: int) -> Run:
    """`clients` threads, each sending the next request as soon as its last one is answered;
    `call` returns the answer (None for a failed request)."""
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(requests)):
        pending.put(index)
    latencies: dict[int, float] = {}
    answers: dict[int, str | None] = {}

    def client() -> None:
        while True:
            try:
                index = pending.get_nowait()
            except queue.Empty:
                return
            started = time.perf_counter()
            answers[index] = call(requests[index])
            latencies[index] = (time.perf_counter() - started) * 1000

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    order = range(len(requests))
    return Run(
        latencies_ms=[latencies[i] for i in order],
        wall_s=wall,
        answers=[answers[i] or "" for i in order],
        errors=sum(answers[i] is None for i in order),
    )


class Raw:
    """mlx-lm itself on the weights the toolkit loads, stopping where the toolkit stops."""

    def __init__(self, model_path: Path) -> None:
        import mlx_lm
        from mlx_lm.generate import batch_generate

        self._generate, self._batch_generate = mlx_lm.generate, batch_generate
        self.model, tokenizer, self.applied = runtime.load_optimized(str(model_path), optimize=True)
        self.tokenizer = tokenizer
        # mlx-lm ends a generation at the tokenizer's end tokens: every token whose text holds
        # a line break is one here, as the line break ends the toolkit's answer.
        self.stopping = copy.copy(tokenizer)
        vocabulary = range(len(tokenizer.get_vocab()))
        line_breaks = {token for token in vocabulary if "\n" in tokenizer.decode([token])}
        self.stopping.eos_token_ids = set(tokenizer.eos_token_ids) | line_breaks

    def tokens(self, request: QaRequest) -> list[int]:
        text = prompt_text(self.tokenizer, request)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def one(self, request: QaRequest) -> str:
        return self._generate(
            self.model, self.stopping, self.tokens(request), max_tokens=request.max_tokens
        )

    def run(self, requests: list[QaRequest], clients: int) -> Run:
        if clients == 1:
            return drive(self.one, requests, 1)
        latencies, answers = [], []
        started = time.perf_counter()
        for start in range(0, len(requests), clients):
            batch = requests[start : start + clients]
            batch_started = time.perf_counter()
            result = self._batch_generate(
                self.model,
                self.stopping,
                [self.tokens(request) for request in batch],
                max_tokens=[request.max_tokens for request in batch],
            )
            # Every member of a batch is answered when the batch ends.
            latencies += [(time.perf_counter() - batch_started) * 1000] * len(batch)
            answers += result.texts
        return Run(latencies, time.perf_counter() - started, answers, errors=0)


def runtime_call(module: ModuleType, model_path: Path) -> Callable[[QaRequest], str]:
    def call(request: QaRequest) -> str:
        return module.generate(
            model_path=str(model_path),
            messages=request.messages,
            assistant_prefix=request.assistant_prefix,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stop=request.stop,
        ).text

    return call


def runtime_before(revision: str) -> ModuleType:
    """providers/mlx/runtime.py as it was at `revision`, as a module of its own (its own model
    cache and scheduler threads)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:providers/mlx/runtime.py"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "providers.mlx.runtime_before"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    # Dataclasses look their module up while the class is built.
    sys.modules[name] = module
    exec(compile(source, f"{revision}:providers/mlx/runtime.py", "exec"), module.__dict__)  # noqa: S102
    return module


@contextlib.contextmanager
def mlx_lm_server(model_dir: Path, *, startup_timeout_s: float = 180.0) -> Iterator[str]:
    """`mlx_lm.server` on `model_dir` with the fast BLAS the toolkit's workers get (as
    tests/support/servers.py starts it, with that environment); yields its base URL."""
    port = free_port()
    environment = os.environ | worker_environment()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlx_lm.server", "--model", str(model_dir)),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=environment,
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                    break
            except OSError:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"mlx_lm.server exited: {log.read()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(process, timeout=10)
        log.close()


def server_call(url: str, tokenizer) -> Callable[[QaRequest], str | None]:
    def call(request: QaRequest) -> str | None:
        body = {
            "prompt": prompt_text(tokenizer, request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": request.stop,
        }
        http_request = urllib.request.Request(  # noqa: S310 (a local URL)
            f"{url}/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(http_request, timeout=300) as answer:  # noqa: S310
                return json.loads(answer.read())["choices"][0]["text"]
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return None

    return call


def api_call(
    base: str, key: str, prompt_tokens: dict[str, int], failures: list[str]
) -> Callable[[QaRequest], str | None]:
    def call(request: QaRequest) -> str | None:
        payload, _ms = execute(base, key, "qa", {"question": request.question})
        if payload.get("status") != "succeeded":
            failures.append(json.dumps(payload.get("error") or payload)[:300])
            return None
        prompt_tokens[request.question] = payload["metrics"]["input_tokens"]
        return str(payload["outputs"]["answer"])

    return call


# The tiny model: the scheduler's own work per token --------------------------------------


def tiny_per_token(modules: dict[str, ModuleType]) -> dict[str, float]:
    """Milliseconds per generated token, of wall time and of this process's CPU time (which
    other processes' load does not inflate), of raw `batch_generate` and of each runtime, with
    `TINY_CLIENTS` requests of up to `TINY_TOKENS` tokens at once (the runtimes with a stop
    sequence to look for)."""
    from mlx_lm.generate import batch_generate

    prompts = [
        [{"role": "user", "content": f"Tell me about the sea, number {index}."}]
        for index in range(TINY_CLIENTS)
    ]

    def timed(work: Callable[[], int]) -> tuple[float, float, int]:
        wall, cpu = time.perf_counter(), time.process_time()
        generated = work()
        return time.perf_counter() - wall, time.process_time() - cpu, generated

    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as directory:
        model_dir = str(build_tiny_model(Path(directory)))

        def through(module: ModuleType) -> int:
            results: list = []

            def call(messages) -> None:
                results.append(
                    module.generate(
                        model_path=model_dir,
                        messages=messages,
                        max_tokens=TINY_TOKENS,
                        stop=[TINY_STOP],
                    )
                )

            threads = [threading.Thread(target=call, args=(m,)) for m in prompts]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return sum(result.completion_tokens for result in results)

        model, tokenizer, _applied = runtime.load_optimized(model_dir, optimize=True)
        tokens = [
            tokenizer.encode(
                tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False),
                add_special_tokens=False,
            )
            for m in prompts
        ]

        def raw() -> int:
            result = batch_generate(model, tokenizer, tokens, max_tokens=TINY_TOKENS)
            return result.stats.generation_tokens

        works = {"raw": raw, **{name: functools.partial(through, m) for name, m in modules.items()}}
        for work in works.values():
            work()
        runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in works}
        for _round in range(TINY_ROUNDS):
            for name, work in works.items():
                runs[name].append(timed(work))
        for module in modules.values():
            module.unload_model(model_path=model_dir)
    figures = {}
    for name, values in runs.items():
        figures[f"{name}_ms_per_token"] = 1000 * statistics.median(w / n for w, _c, n in values)
        figures[f"{name}_cpu_ms_per_token"] = 1000 * statistics.median(c / n for _w, c, n in values)
    return figures


# The run -----------------------------------------------------------------------------------


def _same(first: list[str], second: list[str]) -> int:
    return sum(a.strip() == b.strip() for a, b in zip(first, second, strict=True))


def measure(args: argparse.Namespace, model_path: Path) -> dict:
    questions = [json.loads(line)["question"] for line in HELDOUT.read_text().splitlines()]
    needed = max(REQUESTS.values()) + 1
    requests = qa_requests((questions * (needed // len(questions) + 1))[:needed])
    warmup, timed = requests[0], requests[1:]
    figures: dict = {"concurrency": list(CONCURRENCY), "requests": REQUESTS, "rounds": args.rounds}

    progress("raw mlx-lm: loading the weights as the toolkit does")
    raw = Raw(model_path)
    figures["prompt_tokens"] = {r.question: len(raw.tokens(r)) for r in requests}
    figures["applied"] = list(raw.applied)
    modules = {"runtime": runtime}
    if args.before != "none":
        modules["runtime_before"] = runtime_before(args.before)
    with contextlib.ExitStack() as stack:
        progress("starting mlx_lm.server on the same model directory")
        url = stack.enter_context(mlx_lm_server(model_path))
        progress("starting the toolkit's API: a fresh quick-start service")
        service = Service(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        stack.callback(service.stop)
        figures["api_ready_s"] = service.start()
        api_tokens: dict[str, int] = {}
        api_failures: list[str] = []
        calls: dict[str, Callable[[QaRequest], str | None]] = {
            **{name: runtime_call(module, model_path) for name, module in modules.items()},
            "server": server_call(url, raw.tokenizer),
            "api": api_call(service.base, service.api_key(), api_tokens, api_failures),
        }
        # Each way's first request loads its model and computes its prefix: not timed.
        raw.one(warmup)
        for call in calls.values():
            call(warmup)
        runners: dict[str, Callable[[list[QaRequest], int], Run]] = {
            "raw": raw.run,
            **{
                name: lambda batch, clients, call=call: drive(call, batch, clients)
                for name, call in calls.items()
            },
        }
        runs: dict[str, dict[int, list[Run]]] = {
            name: {clients: [] for clients in CONCURRENCY} for name in runners
        }
        # The ways take turns at each concurrency, in another order each round, so that they
        # meet the machine's other load alike; only one of them works at a time.
        for round_index in range(args.rounds):
            order = list(runners)[round_index:] + list(runners)[:round_index]
            for clients in CONCURRENCY:
                batch = timed[: REQUESTS[clients]]
                for name in order:
                    runs[name][clients].append(runners[name](batch, clients))
                progress(
                    f"  round {round_index + 1}, c={clients}: "
                    + ", ".join(f"{name} {runs[name][clients][-1].rps:.2f}" for name in runners)
                    + " req/s"
                )
        ways = {
            name: {clients: Run.merged(done) for clients, done in by_clients.items()}
            for name, by_clients in runs.items()
        }
    for module in modules.values():
        module.unload_all()
    figures["api_failures"] = api_failures
    figures["api_prompt_tokens_match"] = all(
        figures["prompt_tokens"][question] == tokens for question, tokens in api_tokens.items()
    )

    figures["tiny"] = tiny_per_token(modules) if not args.skip_tiny else None
    figures["ways"] = {
        name: {
            str(clients): {
                "rps": run.rps,
                "p50_ms": run.p50,
                "p95_ms": run.p95,
                "wall_s": run.wall_s,
                "errors": run.errors,
                "latencies_ms": run.latencies_ms,
                "same_answers_as_raw": _same(run.answers, ways["raw"][clients].answers),
            }
            for clients, run in runs.items()
        }
        for name, runs in ways.items()
    }
    figures["answers"] = {name: runs[1].answers for name, runs in ways.items()}
    return figures


def plot_figures(figures: dict) -> dict:
    """The JSON the plot script reads (keys kept stable), with everything else beside it."""
    ways = figures["ways"]

    def series(name: str, key: str) -> list[float]:
        return [ways[name][str(clients)][key] for clients in CONCURRENCY]

    before = {}
    if "runtime_before" in ways:
        before["runtime_before_rps"] = series("runtime_before", "rps")
    return {
        "concurrency": list(CONCURRENCY),
        "raw_rps": series("raw", "rps"),
        "server_rps": series("server", "rps"),
        "api_rps": series("api", "rps"),
        "runtime_rps": series("runtime", "rps"),
        **before,
        "raw_p50_ms": ways["raw"]["1"]["p50_ms"],
        "api_p50_ms": ways["api"]["1"]["p50_ms"],
        "server_p50_ms": ways["server"]["1"]["p50_ms"],
        "runtime_p50_ms": ways["runtime"]["1"]["p50_ms"],
        "latencies_ms": {name: ways[name]["1"]["latencies_ms"] for name in ways},
        "figures": figures,
    }


LABELS = {
    "raw": "raw mlx-lm (`generate` / `batch_generate`)",
    "runtime": "toolkit runtime, in process (`runtime.generate`)",
    "runtime_before": "toolkit runtime before (`{before}`), in process",
    "server": "`mlx_lm.server`, HTTP",
    "api": "toolkit API, sync execute over HTTP",
}


def section(figures: dict, *, before: str, load: tuple[float, float]) -> str:
    hardware = hardware_report()
    ways = figures["ways"]
    names = [name for name in LABELS if name in ways]
    rounds = figures["rounds"]
    counts = {clients: REQUESTS[clients] * rounds for clients in CONCURRENCY}

    def label(name: str) -> str:
        return LABELS[name].format(before=before)

    latency_rows = "\n".join(
        f"| {label(name)} | {ways[name]['1']['p50_ms']:.0f} | {ways[name]['1']['p95_ms']:.0f} |"
        f" {ways[name]['1']['same_answers_as_raw']}/{counts[1]} |"
        for name in names
    )
    rps_rows = "\n".join(
        f"| {label(name)} | "
        + " | ".join(
            f"{ways[name][str(c)]['rps']:.2f}"
            + (f" ({ways[name][str(c)]['errors']} failed)" if ways[name][str(c)]["errors"] else "")
            for c in CONCURRENCY
        )
        + " |"
        for name in names
    )

    def ratio(name: str, other: str, clients: int) -> float:
        return ways[name][str(clients)]["rps"] / ways[other][str(clients)]["rps"]

    ratio_rows = "\n".join(
        f"| {label(name)} | "
        + " | ".join(f"{ratio(name, 'raw', c):.2f}x" for c in CONCURRENCY)
        + " | "
        + " | ".join(f"{ratio(name, 'server', c):.2f}x" for c in CONCURRENCY)
        + " |"
        for name in names
        if name not in ("raw", "server")
    )
    ratio_header = " | ".join(
        [*(f"/ raw c={c}" for c in CONCURRENCY), *(f"/ server c={c}" for c in CONCURRENCY)]
    )
    api_gap = ways["api"]["1"]["p50_ms"] - ways["raw"]["1"]["p50_ms"]
    api_ratio = ratio("api", "raw", max(CONCURRENCY))
    p50_met = api_gap <= P50_TARGET_MS
    rps_met = api_ratio >= RPS_TARGET
    lead = min(ratio("api", "server", c) for c in CONCURRENCY)
    tiny = figures.get("tiny")
    tiny_text = ""
    if tiny:
        rows = "\n".join(
            f"| {label(name)} | {tiny[f'{name}_ms_per_token']:.3f} |"
            f" {tiny[f'{name}_cpu_ms_per_token']:.3f} |"
            for name in names
            if f"{name}_ms_per_token" in tiny
        )
        tiny_text = f"""
### The scheduler's own work (tiny random-weight model)

{TINY_CLIENTS} requests of up to {TINY_TOKENS} tokens at once (the runtimes look for the stop
sequence `{TINY_STOP}`): the model takes about a millisecond a step, so what the scheduler does
per token shows. Medians of {TINY_ROUNDS} alternating runs; CPU time is this process's (all its
threads), which other processes' load does not inflate.

| way | wall ms per generated token | CPU ms per generated token |
|---|---|---|
{rows}
"""
    tokens = figures["prompt_tokens"].values()
    matched = "yes" if figures["api_prompt_tokens_match"] else "**no**"
    failures = figures["api_failures"]
    failed = f" Failed API requests: {len(failures)} ({failures[0]})." if failures else ""
    return f"""{SECTION_START}
## Local serving: `qa` three ways (`bench/bench_local_serving.py`)

Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {hardware["cpu_count"]} CPUs ({hardware["machine"]}),
MLX {hardware["mlx_version"]} on the `{hardware["mlx_backend"]}` backend, mlx-lm
{hardware["mlx_lm_version"]}, Python {platform.python_version()}; load average (1 min) at start
and end {load[0]:.2f} / {load[1]:.2f} (the machine is shared: figures are noisy). The shipped
production version of `qa` (4 demos, CompactAdapter), {min(tokens)}-{max(tokens)}-token prompts,
at most 32 generated tokens, greedy, stop at the line break; held-out questions, the same for
every way. Raw mlx-lm and the runtime run on the toolkit's weights (applied:
{", ".join(figures["applied"]) or "nothing"});
`mlx_lm.server` serves the model directory as shipped (4-bit) with the fast BLAS in its
environment and its own prompt cache; the API is a fresh quick-start service (SQLite,
`manage.py serve`, ready {figures["api_ready_s"]:.0f} s after start); the prompt tokens the API
reports for each question are those of raw's prompt: {matched}.{failed}
Reproduce: `.venv/bin/python bench/bench_local_serving.py`.

### Concurrency 1 ({counts[1]} requests, one at a time)

| way | p50 ms | p95 ms | answers identical to raw |
|---|---|---|---|
{latency_rows}

### Requests per second ({", ".join(f"{counts[c]} requests at {c}" for c in CONCURRENCY)})

Raw at concurrency 4 and 8 is `batch_generate` on consecutive batches of that size; the others
are that many clients, each sending its next request when its last is answered.

| way | {" | ".join(f"c={c}" for c in CONCURRENCY)} |
|---|{"---|" * len(CONCURRENCY)}
{rps_rows}

| requests/s ratio | {ratio_header} |
|---|{"---|" * (2 * len(CONCURRENCY))}
{ratio_rows}
{tiny_text}
Targets: API p50 at concurrency 1 within {P50_TARGET_MS:.0f} ms of raw:
**{"met" if p50_met else "not met"}** ({api_gap:+.0f} ms); API requests/s at concurrency
{max(CONCURRENCY)} at least {RPS_TARGET}x raw: **{"met" if rps_met else "not met"}**
({api_ratio:.2f}x); ahead of `mlx_lm.server` at every
concurrency: **{"met" if lead > 1 else "not met"}** (at least {lead:.2f}x).
{SECTION_END}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: install the default model)")
    parser.add_argument(
        "--before",
        default=DEFAULT_BEFORE,
        help="git revision of providers/mlx/runtime.py to measure beside the current one"
        f" (default {DEFAULT_BEFORE}, before issue 11's scheduler work; 'none' to skip)",
    )
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"rounds of every way (default {ROUNDS})"
    )
    parser.add_argument(
        "--skip-tiny", action="store_true", help="skip the tiny model's per-token figures"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures without updating BENCHMARKS.md"
    )
    args = parser.parse_args()
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    model_path = Path(args.model) if args.model else None
    if model_path is None:
        progress("installing the default model (idempotent)")
        model_path = install_default_model(models_dir=env.var_dir() / "models", progress=progress)
    figures = measure(args, model_path)
    text = section(figures, before=args.before, load=(load_start, os.getloadavg()[0]))
    print(text)
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(plot_figures(figures), indent=1))
    progress(f"wrote {JSON_PATH.relative_to(REPO_ROOT)}")
    if not args.no_write:
        benchmarks_section_write(text, start=SECTION_START, end=SECTION_END)
        progress(f"wrote {BENCHMARKS_FILE.name}")
    progress(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
