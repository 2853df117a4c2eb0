"""Answer quality and latency of the shipped library versions, as a new user meets them.

Starts the quick start's service from scratch (a fresh var directory: SQLite, migrations, the
template library, the default model linked from this checkout's var/models so nothing is
installed twice; `manage.py serve` on a free port), creates an API key, then asks held-out
questions one at a time through `POST /api/v1/dspy/execute` (sync):

- `qa`: bench/heldout/qa.jsonl (30 simple factual questions); correct when the answer,
  normalised (case, punctuation, articles), equals the expected answer or an accepted one;
  short when it has at most four words.
- `sentiment` and `classify_topic`: bench/heldout/<name>.jsonl (24 short texts each); correct
  when the label equals the expected one.

The held-out files are never used by the starter datasets or the optimizer runs. Prints each
answer, then the figures, and writes them into BENCHMARKS.md. Targets (issue 10): qa 25/30
with short answers and a p50 under 500 ms, sentiment and classify_topic 22/24.
"""

import argparse
import json
import re
import statistics
import string
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks_file import benchmarks_section_write  # noqa: E402
from service import Service, execute  # noqa: E402

SECTION_START = "<!-- bench_quality: start -->"
SECTION_END = "<!-- bench_quality: end -->"
HELDOUT_DIR = REPO_ROOT / "bench" / "heldout"
# signature -> (held-out file, output field, target correct)
SETS = {
    "qa": ("qa.jsonl", "answer", 25),
    "sentiment": ("sentiment.jsonl", "sentiment", 22),
    "classify_topic": ("classify_topic.jsonl", "topic", 22),
}
SHORT_WORDS = 4
LATENCY_TARGET_MS = 500.0


def progress(message: str) -> None:
    print(f"[bench_quality] {message}", file=sys.stderr, flush=True)


def normalise(text: str) -> str:
    text = str(text).lower()
    text = "".join(" " if char in string.punctuation else char for char in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def read_rows(name: str) -> list[dict]:
    path = HELDOUT_DIR / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(base: str, key: str, signature: str) -> dict:
    file_name, field, target = SETS[signature]
    rows = read_rows(file_name)
    correct = short = 0
    latencies: list[float] = []
    misses: list[str] = []
    for row in rows:
        inputs = {name: value for name, value in row.items() if name not in ("split", "accepted")}
        expected = inputs.pop(field)
        payload, latency_ms = execute(base, key, signature, inputs)
        latencies.append(latency_ms)
        answer = (payload.get("outputs") or {}).get(field)
        accepted = [expected, *(row.get("accepted", {}).get(field, []))]
        right = answer is not None and normalise(answer) in {normalise(a) for a in accepted}
        correct += right
        short += answer is not None and len(str(answer).split()) <= SHORT_WORDS
        shown = answer if answer is not None else f"error {payload.get('code')}"
        if not right:
            misses.append(f"{next(iter(inputs.values()))!r}: {shown!r} (expected {expected!r})")
        print(f"  {'ok ' if right else 'MISS'} {latency_ms:7.0f} ms  {shown!r}", flush=True)
    return {
        "signature": signature,
        "examples": len(rows),
        "correct": correct,
        "short": short,
        "target": target,
        "p50_ms": statistics.median(latencies),
        "p95_ms": percentile(latencies, 0.95),
        "misses": misses,
    }


def section(results: list[dict], *, ready_s: float) -> str:
    lines = [
        SECTION_START,
        "## Answer quality of the shipped library versions (bench/bench_quality.py)",
        "",
        "A freshly started quick-start service (SQLite, `manage.py serve`, the default model "
        f"SmolLM2-135M; ready {ready_s:.0f} s after start), held-out sets the starter data "
        "never contains, asked one at a time through `POST /api/v1/dspy/execute` "
        "(sync). Reproduce: `.venv/bin/python bench/bench_quality.py`.",
        "",
        "| signature | correct | target | short answers | p50 | p95 |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| `{result['signature']}` | {result['correct']}/{result['examples']} | "
            f"{result['target']} | {result['short']}/{result['examples']} | "
            f"{result['p50_ms']:.0f} ms | {result['p95_ms']:.0f} ms |"
        )
    lines += ["", f"qa's p50 target: under {LATENCY_TARGET_MS:.0f} ms.", "", SECTION_END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    parser.add_argument(
        "signatures", nargs="*", default=list(SETS), help=f"Which of {', '.join(SETS)}."
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as directory:
        service = Service(Path(directory))
        try:
            progress("bootstrapping a fresh quick-start service")
            ready_s = service.start()
            key = service.api_key()
            results = []
            for signature in options.signatures:
                progress(f"asking {signature}")
                results.append(measure(service.base, key, signature))
        finally:
            service.stop()
    for result in results:
        print(
            f"{result['signature']}: {result['correct']}/{result['examples']} correct "
            f"(target {result['target']}), {result['short']} short, "
            f"p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms"
        )
        for miss in result["misses"]:
            print(f"    miss: {miss}")
    if not options.no_write:
        benchmarks_section_write(
            section(results, ready_s=ready_s), start=SECTION_START, end=SECTION_END
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
