"""The 1k -> 100k scale test of the executions list: how much slower a filtered page gets as
the table grows, before and after the list's indexes and keyset pages, in one run.

Seeds executions into a throwaway PostgreSQL database (`bench_scale`, on the server of
`DATABASE_URL` or 127.0.0.1:5432, created, migrated and dropped for the run) in bulk
(`tests/support/bulk.py`: a realistic mix of statuses, six signatures of unequal use, two of
them with several versions, four providers, three API keys and staff sessions), 1,000 then
10,000 then 100,000 rows, and at each size times, through Django's test client (the whole
request: middleware, authentication, queries, serialization, templates):

- `GET /api/v1/executions?status=...&signature=...` with an API key (which sees only its own
  executions): the first page, and a page 1,000 rows deep;
- the admin's executions list with the same two filters.

"Before" is the code and schema as they were, measured in the same run: the list's indexes
dropped (`DROP INDEX`, recreated afterwards), the API list paged by `limit`/`offset` with its
`COUNT(*)` and its former filters (the signature joined by name, `DISTINCT` over every column
for a status), and the admin list with its former paginator, full count and filters. Each
figure is the median of `REQUESTS` requests after a warm-up. Also measured: what the indexes
cost an insert, their size, and the plan PostgreSQL picks (EXPLAIN).

Prints the figures and writes them into BENCHMARKS.md. Target: the API page at 100,000 rows
under twice its time at 1,000.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks_file import benchmarks_section_write  # noqa: E402

SECTION_START = "<!-- bench_scale:start -->"
SECTION_END = "<!-- bench_scale:end -->"
SIZES = (1_000, 10_000, 100_000)
REQUESTS = 20
# An admin page takes ten times an API page: fewer of them, for the same run time.
ADMIN_REQUESTS = 10
WARMUP = 3
INSERTS = 300
INSERT_WARMUP = 50
DEEP_ROWS = 1_000
TARGET_RATIO = 2.0
SPAN = timedelta(days=30)
# Signature name -> (share of the executions, versions): "qa" is the busiest, with three
# versions, as a signature that has been improved a few times is.
SIGNATURES = {
    "qa": (35, 3),
    "summarize": (20, 2),
    "classify": (15, 1),
    "extract": (15, 1),
    "translate": (10, 1),
    "moderate": (5, 1),
}
# The filters measured: a common one (a full page of results at every size) and the one an
# operator reads most (the failures of the busiest signature: a few rows at 1,000).
FILTERS = {
    "succeeded, qa": {"status": "succeeded", "signature": "qa"},
    "failed, qa": {"status": "failed", "signature": "qa"},
}


def progress(message: str) -> None:
    print(f"[bench_scale] {message}", file=sys.stderr, flush=True)


# The list as it was before (the child's URLconf serves it beside the real one) -------------


def before_urlpatterns():
    """The API list and the admin list with their former pagination and filters, under
    `/before/`: the same views and templates, only what this change replaced put back."""
    import django_filters
    from django.contrib import admin
    from django.core.paginator import Paginator
    from django.urls import include, path

    from core.api.filters import UtcIsoDateTimeFilter
    from core.api.pagination import LimitOffsetPagination
    from executions.admin import ExecutionAdmin
    from executions.api import ExecutionListView
    from executions.models import Execution, FailureCause

    class FormerExecutionFilter(django_filters.FilterSet):
        signature = django_filters.CharFilter(field_name="signature_version__signature__name")
        version = django_filters.NumberFilter(field_name="signature_version__number")
        status = django_filters.MultipleChoiceFilter(choices=Execution.Status.choices)
        provider = django_filters.CharFilter(field_name="provider__name")
        requested_provider = django_filters.CharFilter(field_name="requested_provider__name")
        queued_after = UtcIsoDateTimeFilter(field_name="queued_at", lookup_expr="gte")
        queued_before = UtcIsoDateTimeFilter(field_name="queued_at", lookup_expr="lt")
        cause = django_filters.MultipleChoiceFilter(
            field_name="error_cause", choices=FailureCause.choices
        )

        class Meta:
            model = Execution
            fields = ["signature", "version", "status", "provider", "requested_provider"]

    class FormerExecutionAdmin(ExecutionAdmin):
        list_filter = [
            "status",
            "error_cause",
            ("signature_version__signature", admin.RelatedOnlyFieldListFilter),
            "signature_version__number",
            ("requested_provider", admin.RelatedOnlyFieldListFilter),
            ("provider", admin.RelatedOnlyFieldListFilter),
            ("api_key", admin.RelatedOnlyFieldListFilter),
            "mode",
            "error_code",
        ]
        ordering = None
        show_full_result_count = True
        paginator = Paginator

        def get_queryset(self, request):
            return admin.ModelAdmin.get_queryset(self, request)

        def changelist_view(self, request, extra_context=None):
            return admin.ModelAdmin.changelist_view(self, request, extra_context)

    site = admin.AdminSite(name="before")
    site.register(Execution, FormerExecutionAdmin)
    view = ExecutionListView.as_view(
        pagination_class=LimitOffsetPagination, filterset_class=FormerExecutionFilter
    )
    return [
        path("before/api/v1/executions", view),
        path("before/admin/", site.urls),
        path("", include("config.urls")),
    ]


# The child: seed, measure --------------------------------------------------------------------


def _median_ms(client, url: str, params: dict, *, requests: int = REQUESTS) -> list[float]:
    """The median and the fastest of `requests` requests after a warm-up, in ms: the
    median is the figure; the fastest is what the request costs on an idle machine (other
    work on it only ever adds), which compares sizes measured minutes apart more fairly."""
    timings = []
    for index in range(WARMUP + requests):
        start = time.perf_counter()
        response = client.get(url, params)
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise SystemExit(f"{url} {params} answered {response.status_code}")
        if index >= WARMUP:
            timings.append(elapsed)
    return [statistics.median(timings) * 1000, min(timings) * 1000]


def _world():
    from tests.support.bulk import bulk_world
    from tests.support.factories import SignatureVersionFactory
    from tests.support.specs import QA_SPEC

    world = bulk_world(signatures=0, providers=4, api_keys=3)
    weighted = []
    for name, (share, versions) in SIGNATURES.items():
        signature_versions = [
            SignatureVersionFactory(
                signature__name=name, spec=QA_SPEC | {"instructions": f"Answer ({name})."}
            )
        ]
        for number in range(2, versions + 1):
            signature_versions.append(
                SignatureVersionFactory(
                    signature=signature_versions[0].signature,
                    spec=QA_SPEC | {"instructions": f"Answer ({name}, take {number})."},
                )
            )
        # Most of a signature's executions ran its latest version.
        for index, version in enumerate(signature_versions):
            weight = share * (4 if index == len(signature_versions) - 1 else 1)
            weighted += [version] * weight
    world.versions = weighted
    return world


def _vacuum_analyze(connection) -> None:
    # What autovacuum keeps up to date on a live table: the planner's statistics and the
    # visibility map.
    with connection.cursor() as cursor:
        for table in ("executions_execution", "executions_executionattempt"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def _list_indexes():
    from executions.models import Execution

    return [index for index in Execution._meta.indexes if index.name.startswith("execution_list_")]


def _drop_list_indexes(connection) -> None:
    from executions.models import Execution

    with connection.schema_editor() as editor:
        for index in _list_indexes():
            editor.remove_index(Execution, index)
    _vacuum_analyze(connection)


def _create_list_indexes(connection) -> None:
    from executions.models import Execution

    with connection.schema_editor() as editor:
        for index in _list_indexes():
            editor.add_index(Execution, index)
    _vacuum_analyze(connection)


def _insert_ms(world) -> float:
    """The median time of one execution's INSERT, as `execution_create` writes it, inside a
    transaction rolled back at the end (the commit's own cost is the same either way)."""
    from django.db import transaction

    from executions.models import Execution

    timings = []
    with transaction.atomic():
        for index in range(INSERT_WARMUP + INSERTS):
            start = time.perf_counter()
            Execution.objects.create(
                signature_version=world.versions[index % len(world.versions)],
                requested_provider=world.providers[index % len(world.providers)],
                api_key=world.api_keys[index % len(world.api_keys)],
                inputs={"question": "What is the capital of France?"},
                config={"max_tokens": 64},
                mode=Execution.Mode.ASYNC,
            )
            if index >= INSERT_WARMUP:
                timings.append(time.perf_counter() - start)
        transaction.set_rollback(True)
    return statistics.median(timings) * 1000


def _index_sizes(connection) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
            "WHERE indrelid = 'executions_execution'::regclass"
        )
        return dict(cursor.fetchall())


def _plan(connection, queryset) -> str:
    """The indexes PostgreSQL reads for `queryset`, and whether it sorts (EXPLAIN ANALYZE)."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    nodes, reads = [plan[0]["Plan"]], []
    while nodes:
        node = nodes.pop()
        if node.get("Relation Name") == "executions_execution":
            where = f" on {node['Index Name']}" if "Index Name" in node else ""
            reads.append(f"{node['Node Type'].lower()}{where}")
        elif node["Node Type"] in ("Sort", "Incremental Sort", "Unique", "Aggregate"):
            reads.append(node["Node Type"].lower())
        nodes.extend(node.get("Plans", []))
    took = plan[0]["Execution Time"]
    return f"{', '.join(reads)} ({took:.2f} ms)"


def _measure(clients, *, before: bool, signature_ids: dict, admin: bool = True) -> dict:
    api, browser = clients
    prefix = "/before" if before else ""
    figures = {}
    for label, params in FILTERS.items():
        figures[f"api {label}"] = _median_ms(api, f"{prefix}/api/v1/executions", params)
        deep = _deep_page(api, prefix, params, before=before)
        if deep is not None:
            figures[f"api deep {label}"] = deep
        admin_params = {
            "status__exact": params["status"],
            "signature_version__signature__id__exact": signature_ids[params["signature"]],
        }
        if admin:
            figures[f"admin {label}"] = _median_ms(
                browser,
                f"{prefix}/admin/executions/execution/",
                admin_params,
                requests=ADMIN_REQUESTS,
            )
    return figures


def _deep_page(api, prefix: str, params: dict, *, before: bool) -> list[float] | None:
    """The page that starts `DEEP_ROWS` rows in: by offset before, by the cursor the client
    reached it with after. None where the filter matches fewer rows."""
    if before:
        first = api.get(f"{prefix}/api/v1/executions", params).json()
        if first["count"] <= DEEP_ROWS:
            return None
        return _median_ms(api, f"{prefix}/api/v1/executions", params | {"offset": DEEP_ROWS})
    link, seen = f"/api/v1/executions?{_query(params)}", 0
    while seen < DEEP_ROWS:
        page = api.get(link).json()
        seen += len(page["results"])
        link = page["next"]
        if link is None:
            return None
    return _median_ms(api, link, {})


def _query(params: dict) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


def child(sizes: tuple[int, ...]) -> dict:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import clear_url_caches
    from django.utils import timezone

    from executions.filters import ExecutionFilter
    from executions.selectors import execution_list
    from registry.models import Signature
    from tests.support.bulk import bulk_executions

    setup_test_environment()
    # This module is the URLconf: the real one, with the former lists beside it.
    global urlpatterns
    urlpatterns = before_urlpatterns()
    settings.ROOT_URLCONF = __name__
    clear_url_caches()
    started = time.monotonic()
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    progress(f"database {name} migrated in {time.monotonic() - started:.0f} s")
    try:
        world = _world()
        signature_ids = dict(Signature.objects.values_list("name", "id"))
        superuser = get_user_model().objects.create_superuser("bench", password=None)
        browser = Client()
        browser.force_login(superuser)
        api = Client(HTTP_AUTHORIZATION=f"Api-Key {world.api_keys[0].raw_key}")
        now = timezone.now()
        results, seeded = {}, 0
        warmed = False
        for size in sizes:
            started = time.monotonic()
            bulk_executions(world=world, count=size - seeded, now=now, span=SPAN, seed=size)
            seeded = size
            _vacuum_analyze(connection)
            progress(f"{size:,} executions seeded in {time.monotonic() - started:.0f} s")
            if not warmed:
                # Every code path once before anything is timed (imports, templates, the
                # throttle's cache rows), so that the first size measured pays no start-up.
                _measure((api, browser), before=True, signature_ids=signature_ids)
                _measure((api, browser), before=False, signature_ids=signature_ids)
                _insert_ms(world)
                warmed = True
            load = os.getloadavg()[0]
            _drop_list_indexes(connection)
            before = _measure((api, browser), before=True, signature_ids=signature_ids)
            cursor_only = _measure(
                (api, browser), before=False, signature_ids=signature_ids, admin=False
            )
            insert_without = _insert_ms(world)
            _create_list_indexes(connection)
            after = _measure((api, browser), before=False, signature_ids=signature_ids)
            insert_with = _insert_ms(world)
            listed = ExecutionFilter(
                FILTERS["failed, qa"], queryset=execution_list(api_key=world.api_keys[0])
            ).qs[:51]
            results[size] = {
                "load": load,
                "before": before,
                "cursor_only": cursor_only,
                "after": after,
                "insert_ms": {"without": insert_without, "with": insert_with},
                "plan": _plan(connection, listed),
            }
            progress(
                f"{size:,}: "
                + ", ".join(
                    f"{key} {before[key][0]:.0f} -> {after[key][0]:.0f} ms"
                    for key in after
                    if key in before
                )
            )
        sizes = _index_sizes(connection)
        return {
            "server_version": f"PostgreSQL {connection.pg_version // 10000}."
            f"{connection.pg_version % 10000}",
            "results": {str(size): figures for size, figures in results.items()},
            "index_sizes": {index.name: sizes.get(index.name, 0) for index in _list_indexes()},
            "table_indexes": len(sizes),
        }
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


# Filled in by `child` once Django is set up.
urlpatterns = []


def _run_child(sizes: tuple[int, ...]) -> dict:
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    if "DATABASE_URL" in os.environ:
        environment["DATABASE_URL"] = os.environ["DATABASE_URL"]
    environment |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "TEST_DATABASE_NAME": "bench_scale",
        "LOG_LEVEL": "WARNING",
        "DJANGO_DEBUG": "0",
        # Hundreds of requests a minute from one key: the rate limit is not what is measured.
        "API_KEY_RATE_LIMIT": "1000000/min",
        "API_USER_RATE_LIMIT": "1000000/min",
    }
    result = subprocess.run(
        [sys.executable, __file__, "--child", "--sizes", ",".join(map(str, sizes))],
        env=environment,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"the run failed ({result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


# The report ----------------------------------------------------------------------------------


def section(run: dict) -> str:
    results = run["results"]
    first, last = next(iter(results)), list(results)[-1]
    rows = [(f"API, first page: {label}", f"api {label}") for label in FILTERS]
    rows += [(f"API, {DEEP_ROWS:,} rows in: {label}", f"api deep {label}") for label in FILTERS]
    rows += [(f"admin list: {label}", f"admin {label}") for label in FILTERS]

    def cell(figures: dict, key: str) -> str:
        return f"{figures[key][0]:.1f}" if key in figures else "-"

    lines = [
        SECTION_START,
        "## The executions list at scale (`bench/bench_scale.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs "
        f"({platform.machine()}, {platform.system()} {platform.release()}), Python "
        f"{platform.python_version()}, {run['server_version']}; load average (1 min) before "
        "each size's requests: "
        + ", ".join(f"{float(figures['load']):.2f}" for figures in results.values())
        + " (other work on the machine slows every figure). Executions seeded in bulk into "
        "a throwaway "
        f"database over {SPAN.days} days (80% succeeded, 9% failed, the rest timed out, "
        "cancelled, queued or running; six signatures, the busiest, `qa`, with three "
        "versions; three API keys and staff sessions), vacuumed and analyzed as autovacuum "
        "would. Each request through Django's test client, the API's with the first API key "
        f"(a quarter of the executions); median of {REQUESTS} requests (admin: "
        f"{ADMIN_REQUESTS}) after {WARMUP} warm-up requests, in ms. *Before*: the list's "
        "three indexes dropped, the API paged by `limit`/`offset` "
        "with its `COUNT(*)` and its former filters (signature joined by name, `DISTINCT`), "
        "the admin with its full counts and former filters. *Cursor only*: the new pages and "
        "filters without the indexes. *After*: as shipped.",
        "",
        "| request | "
        + " | ".join(f"{int(size):,} rows: before / cursor only / after" for size in results)
        + " |",
        "|---|" + "---|" * len(results),
    ]
    for label, key in rows:
        cells = []
        for figures in results.values():
            cursor_only = cell(figures["cursor_only"], key) if key.startswith("api") else "-"
            cells.append(
                f"{cell(figures['before'], key)} / {cursor_only} / {cell(figures['after'], key)}"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Growth from {int(first):,} to {int(last):,} rows (time at the largest size / time at "
        "the smallest), of the medians and of the fastest requests:",
        "",
        "| request | before, median | after, median | before, fastest | after, fastest |",
        "|---|---|---|---|---|",
    ]
    worst = 0.0
    for label, key in rows:
        if key not in results[first]["after"] or key not in results[last]["after"]:
            continue
        growth = [
            results[last][phase][key][statistic] / results[first][phase][key][statistic]
            for statistic in (0, 1)
            for phase in ("before", "after")
        ]
        if key.startswith("api "):
            worst = max(worst, growth[1])
        lines.append(f"| {label} | " + " | ".join(f"{value:.2f}x" for value in growth) + " |")
    insert = {size: figures["insert_ms"] for size, figures in results.items()}
    sizes_kb = ", ".join(
        f"`{name}` {size / 1024:,.0f} kB" for name, size in run["index_sizes"].items()
    )
    verdict = "met" if worst < TARGET_RATIO else "**not met**"
    lines += [
        "",
        f"Target, the API's first page under {TARGET_RATIO:.0f}x from {int(first):,} to "
        f"{int(last):,} rows (medians): {verdict} (at most {worst:.2f}x).",
        "",
        "One execution's INSERT (median of "
        f"{INSERTS}, in a transaction), without / with the three indexes: "
        + ", ".join(
            f"{int(size):,} rows {value['without']:.2f} / {value['with']:.2f} ms"
            for size, value in insert.items()
        )
        + f". The table has {run['table_indexes']} indexes in all; the three at "
        f"{int(last):,} rows: {sizes_kb}.",
        "",
        "The plan PostgreSQL picks for the API page `failed, qa` of one API key "
        "(EXPLAIN ANALYZE): "
        + "; ".join(f"{int(size):,} rows: {figures['plan']}" for size, figures in results.items())
        + ".",
        SECTION_END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures without updating BENCHMARKS.md"
    )
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help="the table sizes to measure at, comma-separated (default: %(default)s)",
    )
    args, _ = parser.parse_known_args()
    sizes = tuple(sorted(int(size) for size in args.sizes.split(",")))
    if args.child:
        print(json.dumps(child(sizes)), flush=True)
        return
    started = time.monotonic()
    run = _run_child(sizes)
    text = section(run)
    print(text)
    progress(f"done in {time.monotonic() - started:.0f} s")
    if not args.no_write:
        benchmarks_section_write(text, start=SECTION_START, end=SECTION_END)


if __name__ == "__main__":
    main()
