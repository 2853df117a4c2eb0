"""The two plots beside BENCHMARKS.md, drawn from the last runs' figures
(`python bench/plots.py`; bench_service.py and `make bench` draw them too):

- docs/bench/latency.png: the distribution (CDF) of sync execute latency per broker, before
  and after, from var/bench/service.json;
- docs/bench/throughput.png: requests per second against concurrency for async submit, GET one
  and sync execute, and, when var/bench/local_serving.json exists (bench_local_serving.py),
  a second panel with the local model served raw, by mlx_lm.server and through the API.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import ScalarFormatter

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE_RESULTS = REPO_ROOT / "var" / "bench" / "service.json"
LOCAL_SERVING_RESULTS = REPO_ROOT / "var" / "bench" / "local_serving.json"
PLOTS_DIR = REPO_ROOT / "docs" / "bench"
LATENCY_PLOT = PLOTS_DIR / "latency.png"
THROUGHPUT_PLOT = PLOTS_DIR / "throughput.png"

BROKER_COLOURS = {"postgres": "tab:blue", "redis": "tab:red", "sqlite": "tab:green"}
KIND_COLOURS = {"async submit": "tab:blue", "GET one": "tab:orange", "sync": "tab:green"}
SIDE_STYLES = {"before": "--", "after": "-"}


def latency_plot(run: dict, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for result in run["results"]:
        samples = sorted(result.get("latency", {}).get("sync_ms", []))
        if not samples:
            continue
        shares = [(index + 1) / len(samples) for index in range(len(samples))]
        axes.step(
            samples,
            shares,
            where="post",
            linestyle=SIDE_STYLES.get(result["side"], "-"),
            color=BROKER_COLOURS.get(result["broker"], "black"),
            label=f"{result['broker']}, {result['side']} "
            f"(in-process p50 {result['inprocess']['p50']:.1f} ms)",
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(ScalarFormatter())
    axes.tick_params(axis="x", which="minor", labelsize=7)
    axes.set_xlabel("sync execute latency, one client at a time (ms, log scale)")
    axes.set_ylabel("share of requests at or below")
    axes.set_title(f"Sync execute latency, fast engine ({run['date']})")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _curve(points: dict) -> tuple[list[int], list[float]]:
    pairs = sorted((int(clients), point["rps"]) for clients, point in points.items())
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]


def throughput_plot(run: dict, local_serving: list[dict] | None, path: Path) -> None:
    panels = 2 if local_serving else 1
    figure, all_axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)
    axes = all_axes[0][0]
    broker = next(
        (result["broker"] for result in run["results"] if result["broker"] == "postgres"),
        run["results"][0]["broker"] if run["results"] else "postgres",
    )
    for result in run["results"]:
        if result["broker"] != broker:
            continue
        for kind, points in result.get("throughput", {}).items():
            if not points:
                continue
            clients, rps = _curve(points)
            axes.plot(
                clients,
                rps,
                marker="o",
                linestyle=SIDE_STYLES.get(result["side"], "-"),
                color=KIND_COLOURS.get(kind, "black"),
                label=f"{kind}, {result['side']}",
            )
    axes.set_xscale("log", base=2)
    axes.set_xticks([1, 4, 16, 64], labels=["1", "4", "16", "64"])
    axes.set_xlabel("concurrent clients")
    # From a few sync requests a second to a thousand GETs: a log scale shows both.
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(ScalarFormatter())
    axes.set_ylabel("requests per second (log scale)")
    axes.set_title(f"The service, fast engine ({broker} broker)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    if local_serving:
        local = all_axes[0][1]
        rows = sorted(local_serving, key=lambda row: row["concurrency"])
        concurrency = [row["concurrency"] for row in rows]
        for key, label in (
            ("raw_rps", "raw mlx-lm in-process"),
            ("runtime_rps", "the toolkit's MLX runtime in-process"),
            ("server_rps", "mlx_lm.server"),
            ("api_rps", "the toolkit's API"),
        ):
            values = [row.get(key) for row in rows]
            if any(value is not None for value in values):
                local.plot(concurrency, values, marker="o", label=label)
        local.set_xlabel("concurrent requests")
        local.set_ylabel("requests per second")
        local.set_title("Local model (bench_local_serving.py)")
        local.set_xticks(concurrency)
        local.grid(True, alpha=0.3)
        local.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def local_serving_rows(data: object) -> list[dict] | None:
    """The rows of bench_local_serving.py's figures, each with `concurrency` and its requests
    per second (`raw_rps`, `server_rps`, `api_rps`): from a list of such rows, a mapping of
    parallel lists (`{"concurrency": [1, 4, 8], "raw_rps": [...], ...}`), or either of those
    under `results` or `rows`."""
    if isinstance(data, dict) and isinstance(data.get("concurrency"), list):
        columns = {key: value for key, value in data.items() if isinstance(value, list)}
        data = [
            {key: values[index] if index < len(values) else None for key, values in columns.items()}
            for index in range(len(data["concurrency"]))
        ]
    elif isinstance(data, dict):
        data = data.get("results") or data.get("rows")
        if isinstance(data, dict):
            return local_serving_rows(data)
    if not isinstance(data, list):
        return None
    rows = [row for row in data if isinstance(row, dict) and "concurrency" in row]
    return rows or None


def plots_draw() -> list[Path]:
    """Draw what the last runs' figures allow; the paths written."""
    written = []
    if SERVICE_RESULTS.exists():
        run = json.loads(SERVICE_RESULTS.read_text())
        latency_plot(run, LATENCY_PLOT)
        local = None
        if LOCAL_SERVING_RESULTS.exists():
            local = local_serving_rows(json.loads(LOCAL_SERVING_RESULTS.read_text()))
        throughput_plot(run, local, THROUGHPUT_PLOT)
        written += [LATENCY_PLOT, THROUGHPUT_PLOT]
    return written


if __name__ == "__main__":
    paths = plots_draw()
    for path in paths:
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    if not paths:
        print(f"nothing to draw: run bench/bench_service.py first ({SERVICE_RESULTS} is missing)")
        sys.exit(1)
