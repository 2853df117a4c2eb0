"""The service benchmark's own parts, against real things and in seconds: the fast engine in a
real `custom` provider, the load client against a real HTTP server on 127.0.0.1, the figures'
arithmetic, the profile summary, the section's verdicts and the plots."""

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dspy
import pytest

from bench import bench_service, plots
from bench.fast_engine import FAST_ENGINE, FastEngine, chat_completion
from bench.load import LoadSpec, load_run, percentile
from providers.calls import provider_execute
from providers.engines import EngineConfig, engine_contract_problems
from providers.models import Provider
from tests.support.factories import ProviderFactory


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = 503 if self.path == "/refused" else 200
        body = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_fast_engine_answers_every_output_field_of_a_chat_adapter_prompt():
    assert engine_contract_problems(FastEngine) == []
    config = EngineConfig(
        name="fast",
        kind="custom",
        model="fast-engine",
        max_tokens=32,
        temperature=0.0,
        top_p=1.0,
        timeout_s=5.0,
        hardware_optimization=False,
    )
    lm = dspy.LM("custom/fast", engine=FastEngine(config=config), cache=False, num_retries=0)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        prediction = dspy.ChainOfThought("question -> answer")(question="Capital of France?")
    assert (prediction.reasoning, prediction.answer) == ("Paris", "Paris")
    assert chat_completion("no fields named here").startswith("[[ ## answer ## ]]")


@pytest.mark.django_db
def test_the_fast_engine_runs_as_a_custom_provider_by_its_dotted_path():
    provider = ProviderFactory(
        kind=Provider.Kind.CUSTOM, engine_path=FAST_ENGINE, adapter=Provider.Adapter.AUTO
    )
    result = provider_execute(
        provider=provider,
        program=dspy.Predict("question -> answer"),
        inputs={"question": "Capital of France?"},
    )
    assert result.outputs == {"answer": "Paris"}


def test_the_httpx_client_counts_answers_and_stops_at_its_bound(http_server):
    sent = load_run(
        LoadSpec(
            url=f"{http_server}/execute",
            clients=4,
            duration_s=30,
            method="POST",
            body=json.dumps({"mode": "async"}),
            headers={"Content-Type": "application/json"},
            max_requests=40,
        ),
        tool="httpx",
    )
    assert (sent.requests, sent.statuses, sent.errors) == (40, {"200": 40}, 0)
    assert sent.p50_ms is not None and sent.p50_ms <= sent.p99_ms

    refused = load_run(
        LoadSpec(url=f"{http_server}/refused", clients=2, duration_s=30, max_requests=10),
        tool="httpx",
    )
    assert (refused.statuses, refused.errors) == ({"503": 10}, 10)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_counts_answers_by_status(http_server):
    refused = load_run(LoadSpec(url=f"{http_server}/refused", clients=2, duration_s=1), tool="wrk")
    assert refused.tool == "wrk"
    assert refused.requests > 0
    assert set(refused.statuses) == {"503"}
    assert refused.errors == refused.requests


def test_load_goes_to_127_0_0_1_only():
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        LoadSpec(url="http://example.com/", clients=1, duration_s=1)


def test_percentiles_interpolate_between_ranks():
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile(list(map(float, range(101))), 0.99) == 99.0


def test_the_profile_summary_separates_own_time_from_the_projects_functions():
    root = bench_service.REPO_ROOT
    site = f"{root}/.venv/lib/python3.11/site-packages"
    collapsed = "\n".join(
        [
            f"view ({root}/executions/api.py:10);execute ({site}/psycopg/cursor.py:5) 6",
            f"view ({root}/executions/api.py:10);render ({root}/executions/serializers.py:3) 3",
            f"select ({site}/selectors.py:1) 1",
        ]
    )
    summary = bench_service.profile_summary(collapsed)
    assert summary["samples"] == 10
    assert summary["own"][0] == ("execute (psycopg/cursor.py)", 0.6)
    assert summary["project_inclusive"] == [
        ("view (executions/api.py)", 0.9),
        ("render (executions/serializers.py)", 0.3),
    ]


def _run(*, sync_p50: float, get_rps: float) -> dict:
    """A run of the benchmark as bench_service.py stores it, with chosen figures."""
    point = {"p50_ms": 5.0, "p99_ms": 10.0, "errors": 0, "drained": True}
    memory = [{"pid": 1, "role": "serve", "rss_kb": 100 * 1024, "pss_kb": 50 * 1024}]
    latency = {
        name: {"n": 3, "p50": sync_p50, "p95": sync_p50, "p99": sync_p50}
        for name in ("sync", "sync_overhead", "async_accept", "async_overhead")
    }
    result = {
        "side": "after",
        "broker": "postgres",
        "inprocess": {"n": 3, "p50": 1.0, "p95": 1.0, "p99": 1.0},
        "latency": latency | {"sync_ms": [sync_p50, sync_p50 + 1], "async_done_ms": []},
        "throughput": {
            "async submit": {"16": point | {"rps": 600.0}},
            "GET one": {"16": point | {"rps": get_rps}},
            "sync": {"16": point | {"rps": 90.0}, "64": point | {"rps": 95.0}},
        },
        "cluster": {
            "completions_per_s": 100.0,
            "finished": 10,
            "succeeded": 10,
            "drained": True,
            "enqueue_to_start": {"p50": 1.0, "p99": 2.0},
            "queued_to_finished": {"p50": 2.0, "p99": 3.0},
        },
        "memory_idle": memory,
        "memory_load": memory,
        "profiles": {},
    }
    return {
        "date": "2026-12-03 12:00 UTC",
        "plan": "quick",
        "duration_s": 60.0,
        "load": (0.5, 0.7),
        "sides": {"after": "`abc1234`"},
        "load_tool": "wrk",
        "point_s": 2,
        "cluster_executions": 10,
        "results": [result],
    }


def test_the_section_says_which_targets_are_met_and_by_how_much_the_others_are_missed():
    text = bench_service.section(_run(sync_p50=4.0, get_rps=400.0))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if "|" in line}
    assert "p50 **met**; p99 **met**" in rows["sync overhead p50 / p99, ORM broker, PostgreSQL"]
    get_row = rows["GET one execution, 16 clients, ORM broker, PostgreSQL"]
    assert "req/s missed by 600.0 (40% of the target)" in get_row
    assert "**met**" in rows["sync execute throughput, ORM broker, PostgreSQL"]
    assert text.startswith(bench_service.SECTION_START)
    assert text.endswith(bench_service.SECTION_END)


def test_the_plots_are_drawn_with_and_without_the_local_serving_figures(tmp_path):
    run = _run(sync_p50=4.0, get_rps=400.0)
    plots.latency_plot(run, tmp_path / "latency.png")
    local = plots.local_serving_rows(
        {"concurrency": [1, 4], "raw_rps": [1.0, 2.0], "server_rps": [0.5, 1.0], "api_rps": [1, 2]}
    )
    plots.throughput_plot(run, local, tmp_path / "throughput.png")
    plots.throughput_plot(run, None, tmp_path / "throughput-alone.png")
    for name in ("latency.png", "throughput.png", "throughput-alone.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
