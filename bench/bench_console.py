"""Benchmark of the operator's console on 10,000 executions.

Seeds 10,000 executions (with their attempts, over the last week, across signatures,
providers, statuses and API keys: `tests/support/bulk.py`) into a throwaway database, then
times the rendering of the admin dashboard for each window, the usage page, the executions
list and `GET /api/v1/usage`, through Django's test client (the whole request: middleware,
queries, templates). PostgreSQL (a database created and dropped for the run, on the server
of `DATABASE_URL` or 127.0.0.1:5432) and SQLite (in memory) each run in a child process.

Prints the figures and writes them into BENCHMARKS.md. Target: every page under a second.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks_file import benchmarks_section_write  # noqa: E402

SECTION_START = "<!-- bench_console: start -->"
SECTION_END = "<!-- bench_console: end -->"
EXECUTIONS = 10_000
REPEATS = 5
TARGET_S = 1.0
BACKENDS = {
    "postgresql": {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "TEST_DATABASE_NAME": "bench_console",
    },
    "sqlite": {"DJANGO_SETTINGS_MODULE": "config.settings.local"},
}
PAGES = {
    "dashboard, last hour": "/admin/?window=hour",
    "dashboard, last day": "/admin/?window=day",
    "dashboard, last week": "/admin/?window=week",
    "usage per client, last week": "/admin/console/usage/?window=week",
    "executions list": "/admin/executions/execution/",
    "GET /api/v1/usage?window=week (API key)": "/api/v1/usage?window=week",
}


def progress(message: str) -> None:
    print(f"[bench_console] {message}", file=sys.stderr, flush=True)


def child() -> dict:
    """Seed a throwaway database and time each page (runs in its own process)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment
    from django.utils import timezone

    setup_test_environment()
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        from tests.support.bulk import bulk_executions, bulk_world

        started = time.monotonic()
        world = bulk_world()
        attempts = bulk_executions(world=world, count=EXECUTIONS, now=timezone.now())
        seeded_s = time.monotonic() - started
        admin = get_user_model().objects.create_superuser("bench", password=None)
        browser = Client()
        browser.force_login(admin)
        api = Client(HTTP_AUTHORIZATION=f"Api-Key {world.api_keys[0].raw_key}")
        pages = {}
        for label, url in PAGES.items():
            client = api if url.startswith("/api/") else browser
            timings = []
            for _ in range(REPEATS + 1):
                with CaptureQueriesContext(connection) as queries:
                    start = time.perf_counter()
                    response = client.get(url)
                    timings.append(time.perf_counter() - start)
                if response.status_code != 200:
                    raise SystemExit(f"{url} answered {response.status_code}")
            # The first request warms the caches (templates, the throttle's table): left out.
            pages[label] = {
                "median_s": statistics.median(timings[1:]),
                "max_s": max(timings[1:]),
                "queries": len(queries.captured_queries),
            }
            progress(f"{label}: {pages[label]['median_s'] * 1000:.0f} ms")
        return {
            "vendor": connection.vendor,
            "server_version": _server_version(connection),
            "executions": EXECUTIONS,
            "attempts": attempts,
            "seeded_s": seeded_s,
            "pages": pages,
        }
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


def _server_version(connection) -> str:
    if connection.vendor == "postgresql":
        return f"PostgreSQL {connection.pg_version // 10000}.{connection.pg_version % 10000}"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version}"


def _run_child(backend: str) -> dict:
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    if backend == "postgresql" and "DATABASE_URL" in os.environ:
        environment["DATABASE_URL"] = os.environ["DATABASE_URL"]
    environment |= BACKENDS[backend] | {"LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0"}
    result = subprocess.run(
        [sys.executable, __file__, "--child"],
        env=environment,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"the {backend} run failed ({result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def section(results: dict[str, dict]) -> str:
    load = os.getloadavg()[0]
    lines = [
        SECTION_START,
        "## Operator's console (`bench/bench_console.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs "
        f"({platform.machine()}, {platform.system()} {platform.release()}), Python "
        f"{platform.python_version()}; load average (1 min) {load:.2f} at the end. "
        f"{EXECUTIONS:,} executions over the last week, with their attempts, seeded in bulk "
        "into a throwaway database; each page requested through Django's test client "
        f"(the whole request), median of {REPEATS} after a first, warming request.",
        "",
        "| page | "
        + " | ".join(f"{r['server_version']}, ms (queries)" for r in results.values())
        + " |",
        "|---|" + "---|" * len(results),
    ]
    worst = 0.0
    for label in PAGES:
        cells = []
        for result in results.values():
            page = result["pages"][label]
            worst = max(worst, page["median_s"])
            cells.append(f"{page['median_s'] * 1000:.0f} ({page['queries']})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    verdict = "met" if worst < TARGET_S else "**not met**"
    lines += [
        "",
        f"Target, every page under {TARGET_S:.0f} s: {verdict} (slowest median "
        f"{worst * 1000:.0f} ms).",
        SECTION_END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, "all"],
        default="all",
        help="the database to measure on (default: both)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures without updating BENCHMARKS.md"
    )
    args, _ = parser.parse_known_args()
    if args.child:
        print(json.dumps(child()), flush=True)
        return
    backends = list(BACKENDS) if args.backend == "all" else [args.backend]
    results = {}
    for backend in backends:
        progress(f"seeding {EXECUTIONS:,} executions on {backend}")
        results[backend] = _run_child(backend)
    text = section(results)
    print(text)
    if not args.no_write:
        benchmarks_section_write(text, start=SECTION_START, end=SECTION_END)


if __name__ == "__main__":
    main()
