"""The service under load, before and after from one run: what it adds over the in-process
DSPy call, its throughput, its cluster's completions and its processes' memory.

Each side (`--before REV`, a `git worktree` of that commit, and this checkout) runs as a freshly
bootstrapped service (`manage.py serve`, production settings, 2 gunicorn workers x 8 threads,
the `tasks` and `inference` clusters) on 127.0.0.1 with each broker: django-q2's ORM broker on
PostgreSQL, the Redis broker (PostgreSQL for the rows), and the quick start's SQLite default.
Executions run `qa` on a `custom` provider whose engine (`bench.fast_engine.FastEngine`)
answers a fixed ChatAdapter completion in microseconds, so every millisecond measured is the
service's own. Per side and broker:

1. latency of sync execute and of async execute (submit to the row's `finished_at`), one client
   at a time, p50/p95/p99, and the overhead over the same program called in-process
   (`provider_execute` on the same provider, program and inputs, in the service's own code);
2. throughput of async submit, GET one execution and sync execute at 1, 4, 16 and 64 clients
   (wrk, or the httpx client when wrk is not installed), error counts, p50/p99;
3. cluster completions per second (N async executions submitted by 16 clients; N over the
   span from the first `started_at` to the last `finished_at` of their rows) and the wait from
   enqueue to start (`queued_at` -> `started_at`, p50/p99);
5. resident memory (RSS and PSS from /proc/<pid>/smaps_rollup) of every process of the
   service, named by role, idle and under load (64 sync clients).

On the side under work, py-spy (when installed) records a web worker and a task worker under
the 64-client loads; the top frames go into BENCHMARKS.md, the raw profiles into
var/bench/profiles/. Writes its section of BENCHMARKS.md, the machine section at its top,
var/bench/service.json, and the plots (bench/plots.py).
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import httpx  # noqa: E402
from benchmarks_file import BENCHMARKS_FILE, benchmarks_section_write  # noqa: E402
from load import LoadResult, LoadSpec, load_run, load_tool, percentile  # noqa: E402
from machine import machine_description, machine_section_write  # noqa: E402
from service import REPO_ROOT, Service, api_key_from_output  # noqa: E402

SECTION_START = "<!-- bench_service: start -->"
SECTION_END = "<!-- bench_service: end -->"
BEFORE_MARKER = re.compile(r"<!-- bench_service before: (\S+) -->")
VAR = REPO_ROOT / "var" / "bench"
RESULTS_FILE = VAR / "service.json"
PROFILES_DIR = VAR / "profiles"
BEFORE_WORKTREE = VAR / "before"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/{name}"
REDIS_URL = "redis://127.0.0.1:6379/{number}"
REDIS_DB = {"before": 11, "after": 12}
BROKERS = ("postgres", "redis", "sqlite")
BROKER_LABELS = {
    "postgres": "ORM broker, PostgreSQL",
    "redis": "Redis broker, PostgreSQL",
    "sqlite": "ORM broker, SQLite (quick start)",
}
SIGNATURE = "qa"
INPUTS = {"question": "What is the capital of France?"}
PROVIDER = "bench-fast"
FAST_ENGINE = "bench.fast_engine.FastEngine"
FINISHED = ("succeeded", "failed", "timed_out", "cancelled")
KINDS = ("async submit", "GET one", "sync")
PY_SPY = Path(sys.executable).parent / "py-spy"

# Production settings as an operator runs them, with the limits a load test would trip lifted:
# the per-key rate limit (600/min) and the queue caps (1,000; 200 per client) would answer 429s
# that measure the limits, not the service.
SERVICE_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "bench-service-secret-key-not-for-any-real-deployment-0123456789",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    # Plain HTTP on 127.0.0.1: no TLS terminator in front to redirect to.
    "DJANGO_SECURE_SSL_REDIRECT": "0",
    "API_KEY_RATE_LIMIT": "100000000/min",
    "EXECUTIONS_MAX_QUEUED": "1000000",
    "EXECUTIONS_MAX_QUEUED_PER_CLIENT": "1000000",
}

TARGETS = {
    "sync_overhead_p50_ms": 5.0,
    "sync_overhead_p99_ms": 25.0,
    "async_submit_rps": 500.0,
    "async_submit_p99_ms": 50.0,
    "get_one_rps": 1000.0,
    "get_one_p99_ms": 20.0,
    "cluster_completions_per_s": 100.0,
    "service_rss_mb": 1200.0,
}


@dataclass(frozen=True)
class Plan:
    """How much each measurement does: the full run, or `--quick`."""

    inprocess_calls: int
    sync_samples: int
    async_samples: int
    point_s: int
    curve: tuple[int, ...]
    other_brokers_curve: tuple[int, ...]
    cluster_executions: int
    drain_timeout_s: float


FULL = Plan(
    inprocess_calls=300,
    sync_samples=150,
    async_samples=40,
    point_s=3,
    curve=(1, 4, 16, 64),
    other_brokers_curve=(16, 64),
    cluster_executions=300,
    drain_timeout_s=120,
)
QUICK = Plan(
    inprocess_calls=100,
    sync_samples=40,
    async_samples=10,
    point_s=2,
    curve=(1, 16, 64),
    other_brokers_curve=(16, 64),
    cluster_executions=100,
    drain_timeout_s=60,
)


def progress(message: str) -> None:
    print(f"[bench_service {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The two sides


@dataclass(frozen=True)
class Side:
    name: str
    source: Path
    label: str


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def after_side() -> Side:
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    label = f"`{commit}`" + (" with uncommitted changes" if dirty else "")
    return Side("after", REPO_ROOT, label)


def before_side(rev: str) -> Side:
    """A detached worktree of `rev` at var/bench/before (made again at each run)."""
    commit = _git("rev-parse", "--short", f"{rev}^{{commit}}")
    if BEFORE_WORKTREE.exists():
        before_worktree_remove()
    BEFORE_WORKTREE.parent.mkdir(parents=True, exist_ok=True)
    _git("worktree", "add", "--detach", str(BEFORE_WORKTREE), commit)
    return Side("before", BEFORE_WORKTREE, f"`{commit}`")


def before_worktree_remove() -> None:
    with contextlib.suppress(subprocess.CalledProcessError):
        _git("worktree", "remove", "--force", str(BEFORE_WORKTREE))
    shutil.rmtree(BEFORE_WORKTREE, ignore_errors=True)
    with contextlib.suppress(subprocess.CalledProcessError):
        _git("worktree", "prune")


def default_before() -> str | None:
    """The commit the last run compared with (BENCHMARKS.md names it), so that runs compare
    against the same baseline until told otherwise."""
    if not BENCHMARKS_FILE.exists():
        return None
    found = BEFORE_MARKER.search(BENCHMARKS_FILE.read_text())
    return found.group(1) if found else None


# ---------------------------------------------------------------------------------------------
# Storage per side and broker


class Storage:
    """The database (and Redis number) of one side and broker, made empty before the service
    starts and dropped after it; reads its executions' rows."""

    def __init__(self, *, side: str, broker: str, var_dir: Path) -> None:
        self.broker = broker
        self.var_dir = var_dir
        self.database = f"bench_service_{side}_{broker}"
        self.redis_number = REDIS_DB[side]

    def env(self) -> dict[str, str]:
        if self.broker == "sqlite":
            return {}
        env = {"DATABASE_URL": POSTGRES_URL.format(name=self.database)}
        if self.broker == "redis":
            env["REDIS_URL"] = REDIS_URL.format(number=self.redis_number)
        return env

    def create(self) -> None:
        if self.broker == "sqlite":
            return
        self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{self.database}"')
        if self.broker == "redis":
            import redis

            redis.Redis.from_url(REDIS_URL.format(number=self.redis_number)).flushdb()

    def drop(self) -> None:
        if self.broker == "sqlite":
            return
        self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        if self.broker == "redis":
            import redis

            redis.Redis.from_url(REDIS_URL.format(number=self.redis_number)).flushdb()

    @staticmethod
    def _admin(statement: str) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(statement)

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.broker == "sqlite":
            with contextlib.closing(sqlite3.connect(self.var_dir / "db.sqlite3", timeout=30)) as db:
                return db.execute(sql.replace("%s", "?"), params).fetchall()
        import psycopg

        with psycopg.connect(POSTGRES_URL.format(name=self.database)) as connection:
            return connection.execute(sql, params).fetchall()

    def counts(self) -> tuple[int, int]:
        """(executions, unfinished executions)."""
        placeholders = ", ".join(["%s"] * len(FINISHED))
        sql = (
            "SELECT count(*), "  # noqa: S608 (placeholders only)
            f"count(*) FILTER (WHERE status NOT IN ({placeholders})) FROM executions_execution"
        )
        if self.broker == "sqlite":
            sql = (
                "SELECT count(*), "  # noqa: S608
                f"sum(CASE WHEN status NOT IN ({placeholders}) THEN 1 ELSE 0 END) "
                "FROM executions_execution"
            )
        total, unfinished = self._query(sql, FINISHED)[0]
        return total, unfinished or 0

    def rows_since(self, since: datetime) -> list[tuple[str, datetime, datetime, datetime]]:
        """(status, queued_at, started_at, finished_at) of the executions queued since then."""
        value: object = since
        if self.broker == "sqlite":
            value = since.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        rows = self._query(
            "SELECT status, queued_at, started_at, finished_at FROM executions_execution "
            "WHERE queued_at >= %s",
            (value,),
        )
        return [(row[0], *(_aware(value) for value in row[1:])) for row in rows]

    def wait_settled(self, *, timeout_s: float, quiet_s: float = 1.0) -> bool:
        """Wait until every execution has finished and none has been added for `quiet_s`: a
        load tool that stopped leaves requests in the web server's queue, which go on making
        executions after it has gone. False when `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        last, quiet_since = None, time.monotonic()
        while time.monotonic() < deadline:
            total, unfinished = self.counts()
            if total != last or unfinished:
                last, quiet_since = total, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return True
            time.sleep(0.2)
        return False


def _aware(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# The service's processes


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def memory_kb(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) of a process in kB, from /proc/<pid>/smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(Rss|Pss):\s+(\d+) kB", text, re.MULTILINE))
    if "Rss" not in values or "Pss" not in values:
        return None
    return int(values["Rss"]), int(values["Pss"])


def process_roles(service: Service) -> dict[int, str]:
    """Each process of the service by its role: serve, the gunicorn master and workers, and per
    cluster django-q2's main process, sentinel, workers, monitor and pusher (told apart by what
    django-q2 logs as each starts: 'ready for work at PID', ...)."""
    pids = service.pids()
    if not pids:
        return {}
    log_path = service.var_dir / "serve.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    logged = {}
    for pattern, role in (
        (r"ready for work at (\d+)", "worker"),
        (r"monitoring at (\d+)", "monitor"),
        (r"pushing tasks at (\d+)", "pusher"),
        (r"(\d+) \S+ guarding cluster", "sentinel"),
    ):
        logged |= {int(pid): role for pid in re.findall(pattern, log)}
    serve = pids[0]
    parents = {pid: _ppid(pid) for pid in pids}
    roles = {serve: "serve"}
    for pid in pids[1:]:
        command = _cmdline(pid)
        if "gunicorn" in command:
            roles[pid] = "gunicorn master" if parents[pid] == serve else "gunicorn worker"
            continue
        # The cluster's main process: the ancestor just below serve.
        main = pid
        while parents.get(main) not in (serve, None):
            main = parents[main]
        cluster = _environ(main).get("Q_CLUSTER_NAME") or "tasks"
        if pid == main:
            role = "qcluster" if "qcluster" in command else command.split(" ", 2)[-1][:40]
        else:
            role = logged.get(pid, "sentinel" if parents[pid] == main else "child")
        roles[pid] = f"{cluster} {role}"
    return roles


def memory_snapshot(service: Service) -> list[dict]:
    snapshot = []
    for pid, role in process_roles(service).items():
        found = memory_kb(pid)
        if found is not None:
            snapshot.append({"pid": pid, "role": role, "rss_kb": found[0], "pss_kb": found[1]})
    return snapshot


def _pid_of(service: Service, role: str) -> int | None:
    return next((pid for pid, name in process_roles(service).items() if name == role), None)


# ---------------------------------------------------------------------------------------------
# Profiles (py-spy)


class Profile:
    """py-spy recording one process for `duration_s`, without stopping it (`--nonblocking`)."""

    def __init__(self, *, pid: int | None, name: str, duration_s: int) -> None:
        self.name = name
        self.path = PROFILES_DIR / f"{name}.txt"
        self.process: subprocess.Popen | None = None
        if pid is None or not PY_SPY.exists():
            return
        PROFILES_DIR.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                str(PY_SPY),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(duration_s),
                "--rate",
                "100",
                "--nonblocking",
                "--function",
                "--full-filenames",
                "--format",
                "raw",
                "--output",
                str(self.path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def summary(self, *, top: int = 12) -> dict | None:
        if self.process is None:
            return None
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None
        if not self.path.exists():
            return None
        return profile_summary(self.path.read_text(), top=top) | {"file": str(self.path)}


_SOURCE_ROOTS = (f"{REPO_ROOT}/", f"{BEFORE_WORKTREE}/")


def _frame(frame: str) -> tuple[str, bool]:
    """py-spy's 'function (path/to/module.py:12)' as 'function (module path)', and whether it
    is the project's own code (a checkout's file, not an installed package's)."""
    found = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not found:
        return frame, False
    function, path = found.groups()
    # manage.py is under every stack of a cluster process: it tells nothing.
    own = (
        path.startswith(_SOURCE_ROOTS) and "/.venv/" not in path and not path.endswith("/manage.py")
    )
    for marker in ("site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        for root in _SOURCE_ROOTS:
            path = path.removeprefix(root)
    return f"{function} ({path})", own


def profile_summary(collapsed: str, *, top: int = 12) -> dict:
    """From py-spy's collapsed stacks: the frames where most samples were (own time), and the
    project's own functions by the share of samples under them (inclusive)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_frame(frame) for frame in stack.split(";")]
        own[frames[-1][0]] += samples
        for name in {name for name, project in frames if project}:
            inclusive[name] += samples
    if not total:
        return {"samples": 0, "own": [], "project_inclusive": []}
    return {
        "samples": total,
        "own": [(name, count / total) for name, count in own.most_common(top)],
        "project_inclusive": [(name, count / total) for name, count in inclusive.most_common(top)],
    }


# ---------------------------------------------------------------------------------------------
# Setting a service up, and the in-process baseline


SETUP_MARKER = "BENCH-SERVICE-SETUP "
SETUP_CODE = """
import io, json, time
from django.core.management import call_command
import executions
from providers.calls import provider_execute
from providers.models import Provider
from providers.services import provider_create
from registry.selectors import signature_version_resolve
from registry.services.versions import signature_version_build

provider = Provider.objects.filter(name={provider!r}).first() or provider_create(
    name={provider!r}, kind="custom", model="fast-engine", engine_path={engine!r}
)
output = io.StringIO()
call_command("executions_create_api_key", "bench-service", stdout=output)
version = signature_version_resolve(name={signature!r})
program = signature_version_build(version=version)
config = dict(version.lm_defaults or {{}})
inputs = {inputs!r}
for _ in range(20):
    provider_execute(provider=provider, program=program, inputs=inputs, config=config)
samples = []
for _ in range({calls}):
    started = time.perf_counter()
    provider_execute(provider=provider, program=program, inputs=inputs, config=config)
    samples.append((time.perf_counter() - started) * 1000)
print({marker!r} + json.dumps({{
    "key_output": output.getvalue(),
    "inprocess_ms": samples,
    "version": version.number,
    "code": executions.__file__,
}}))
"""


def service_setup(service: Service, *, calls: int) -> dict:
    """The fast provider and an API key, made through the checkout's own services, and the
    in-process time of the program a sync execute will run (the same provider, version,
    inputs and settings), measured in that checkout's code."""
    code = SETUP_CODE.format(
        provider=PROVIDER,
        engine=FAST_ENGINE,
        signature=SIGNATURE,
        inputs=INPUTS,
        calls=calls,
        marker=SETUP_MARKER,
    )
    output = service.shell(code)
    line = next(line for line in output.splitlines() if line.startswith(SETUP_MARKER))
    figures = json.loads(line.removeprefix(SETUP_MARKER))
    expected = str(service.source.resolve())
    if not figures["code"].startswith(expected):
        raise RuntimeError(f"the service ran {figures['code']}, not the checkout at {expected}")
    figures["key"] = api_key_from_output(figures.pop("key_output"))
    return figures


# ---------------------------------------------------------------------------------------------
# Measurements


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
    }


class Client:
    """One keep-alive connection to the service, for the one-at-a-time measurements."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
        self.http = httpx.Client(base_url=base, headers=self.headers, timeout=120)

    def execute_body(self, mode: str) -> str:
        return json.dumps(
            {"signature": SIGNATURE, "inputs": INPUTS, "provider": PROVIDER, "mode": mode}
        )

    def sync(self) -> tuple[dict, float]:
        started = time.perf_counter()
        answer = self.http.post("/api/v1/dspy/execute", content=self.execute_body("sync"))
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise RuntimeError(f"sync execute answered {answer.status_code}: {answer.text[:300]}")
        return answer.json(), elapsed

    def async_until_finished(self) -> tuple[float, float]:
        """(milliseconds to the 202, milliseconds from the request to the row's finished_at),
        following the execution with GETs 5 ms apart."""
        wall_started = time.time()
        started = time.perf_counter()
        answer = self.http.post("/api/v1/dspy/execute", content=self.execute_body("async"))
        accepted_ms = (time.perf_counter() - started) * 1000
        if answer.status_code != 202:
            raise RuntimeError(f"async execute answered {answer.status_code}: {answer.text[:300]}")
        url = answer.json()["url"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = self.http.get(url).json()
            if body["status"] in FINISHED:
                finished = datetime.fromisoformat(body["timings"]["finished_at"])
                return accepted_ms, (finished.timestamp() - wall_started) * 1000
            time.sleep(0.005)
        raise RuntimeError(f"async execution {url} did not finish within 60 s")

    def close(self) -> None:
        self.http.close()


def load_spec(client: Client, kind: str, *, clients: int, duration_s: float, execution_url: str):
    if kind == "GET one":
        return LoadSpec(
            url=execution_url,
            clients=clients,
            duration_s=duration_s,
            headers={"Authorization": client.headers["Authorization"]},
        )
    return LoadSpec(
        url=f"{client.base}/api/v1/dspy/execute",
        clients=clients,
        duration_s=duration_s,
        method="POST",
        body=client.execute_body("async" if kind == "async submit" else "sync"),
        headers=client.headers,
    )


def measure_latency(client: Client, plan: Plan, inprocess_p50: float) -> dict:
    sync_ms, async_accept_ms, async_done_ms = [], [], []
    last = None
    for _ in range(plan.sync_samples):
        last, elapsed = client.sync()
        sync_ms.append(elapsed)
    for _ in range(plan.async_samples):
        accepted, finished = client.async_until_finished()
        async_accept_ms.append(accepted)
        async_done_ms.append(finished)
    return {
        "sync_ms": sync_ms,
        "sync": summary(sync_ms),
        "sync_overhead": summary([value - inprocess_p50 for value in sync_ms]),
        "async_accept": summary(async_accept_ms),
        "async_done_ms": async_done_ms,
        "async_overhead": summary([value - inprocess_p50 for value in async_done_ms]),
        "execution_url": last["url"],
    }


def measure_throughput(
    client: Client,
    service: Service,
    storage: Storage,
    plan: Plan,
    *,
    curve: tuple[int, ...],
    execution_url: str,
    profile: bool,
) -> tuple[dict, list[dict], dict]:
    """Every kind at every concurrency of `curve`; returns the points, the memory under load
    (sampled halfway through 64 sync clients), and the profiles of the 64-client points."""
    points: dict[str, dict[int, dict]] = {kind: {} for kind in KINDS}
    memory_under_load: list[dict] = []
    profiles: dict[str, dict | None] = {}
    for kind in ("GET one", "async submit", "sync"):
        for clients in curve:
            spec = load_spec(
                client, kind, clients=clients, duration_s=plan.point_s, execution_url=execution_url
            )
            running: list[Profile] = []
            sampler = None
            if clients == max(curve):
                if profile:
                    web = _pid_of(service, "gunicorn worker")
                    name = "web-" + kind.replace(" ", "-")
                    running.append(Profile(pid=web, name=name, duration_s=plan.point_s))
                    if kind == "sync":
                        worker = _pid_of(service, "tasks worker")
                        running.append(
                            Profile(pid=worker, name="task-worker-sync", duration_s=plan.point_s)
                        )
                if kind == "sync":
                    sampler = threading.Timer(
                        plan.point_s / 2,
                        lambda: memory_under_load.extend(memory_snapshot(service)),
                    )
                    sampler.start()
            result: LoadResult = load_run(spec)
            if sampler is not None:
                sampler.join()
            for recording in running:
                profiles[recording.name] = recording.summary()
            drained = storage.wait_settled(timeout_s=plan.drain_timeout_s)
            points[kind][clients] = result.as_dict() | {"drained": drained}
            progress(
                f"  {kind:12} {clients:3} clients: {result.rps:7.1f} req/s, p50 "
                f"{_ms(result.p50_ms)}, p99 {_ms(result.p99_ms)}, {result.errors} errors"
            )
    return points, memory_under_load, profiles


def measure_cluster(client: Client, storage: Storage, plan: Plan) -> dict:
    """N async executions from 16 clients; completions per second from the rows."""
    since = datetime.now(UTC)
    submitted = load_run(
        LoadSpec(
            url=f"{client.base}/api/v1/dspy/execute",
            clients=16,
            duration_s=120,
            method="POST",
            body=client.execute_body("async"),
            headers=client.headers,
            max_requests=plan.cluster_executions,
        ),
        tool="httpx",
    )
    drained = storage.wait_settled(timeout_s=plan.drain_timeout_s)
    rows = storage.rows_since(since)
    done = [row for row in rows if row[3] is not None and row[2] is not None]
    figures: dict = {
        "submitted": submitted.requests,
        "submit_errors": submitted.errors,
        "finished": len(done),
        "succeeded": sum(1 for row in done if row[0] == "succeeded"),
        "drained": drained,
    }
    if done:
        span_s = (max(row[3] for row in done) - min(row[2] for row in done)).total_seconds()
        waits = [(row[2] - row[1]).total_seconds() * 1000 for row in done]
        figures |= {
            "span_s": span_s,
            "completions_per_s": len(done) / span_s if span_s > 0 else None,
            "enqueue_to_start": summary(waits),
            "queued_to_finished": summary(
                [(row[3] - row[1]).total_seconds() * 1000 for row in done]
            ),
        }
    return figures


def measure(side: Side, broker: str, plan: Plan, *, curve: tuple[int, ...], profile: bool) -> dict:
    var_dir = VAR / "service" / f"{side.name}-{broker}"
    shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir(parents=True)
    storage = Storage(side=side.name, broker=broker, var_dir=var_dir)
    storage.create()
    service = Service(var_dir, source=side.source, env=SERVICE_ENV | storage.env())
    result: dict = {"side": side.name, "broker": broker}
    try:
        started = time.monotonic()
        service.manage("bootstrap")
        result["bootstrap_s"] = time.monotonic() - started
        result["ready_s"] = service.start(bootstrap=False)
        setup = service_setup(service, calls=plan.inprocess_calls)
        result["inprocess"] = summary(setup["inprocess_ms"])
        result["version"] = setup["version"]
        client = Client(service.base, setup["key"])
        try:
            for _ in range(10):
                client.sync()
            result["memory_idle"] = memory_snapshot(service)
            progress(f"  in-process p50 {result['inprocess']['p50']:.2f} ms; latency")
            result["latency"] = measure_latency(client, plan, result["inprocess"]["p50"])
            progress(
                f"  sync p50 {result['latency']['sync']['p50']:.1f} ms, "
                f"p99 {result['latency']['sync']['p99']:.1f} ms; throughput"
            )
            points, under_load, profiles = measure_throughput(
                client,
                service,
                storage,
                plan,
                curve=curve,
                execution_url=result["latency"]["execution_url"],
                profile=profile,
            )
            result["throughput"] = points
            result["memory_load"] = under_load
            result["profiles"] = profiles
            progress("  cluster completions")
            result["cluster"] = measure_cluster(client, storage, plan)
        finally:
            client.close()
    finally:
        service.stop()
        storage.drop()
    result["errors_in_log"] = _log_errors(var_dir / "serve.log")
    return result


def _log_errors(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines() if " ERROR " in line)


# ---------------------------------------------------------------------------------------------
# The section of BENCHMARKS.md


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms")


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _lower_is_better(figure: float | None, target: float, unit: str = " ms") -> str:
    if figure is None:
        return "not measured"
    if figure <= target:
        return "**met**"
    return f"missed by {figure - target:,.1f}{unit} ({figure / target:.1f}x the target)"


def _higher_is_better(figure: float | None, target: float) -> str:
    if figure is None:
        return "not measured"
    if figure >= target:
        return "**met**"
    return f"missed by {target - figure:,.1f} ({figure / target:.0%} of the target)"


def _total_mb(snapshot: list[dict], key: str) -> float:
    return sum(item[key] for item in snapshot) / 1024


def _points(result: dict, kind: str) -> dict:
    return result.get("throughput", {}).get(kind, {})


def _point(result: dict, kind: str, clients: int) -> dict | None:
    points = _points(result, kind)
    return points.get(clients) or points.get(str(clients))


def target_rows(after: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """(what, figure, target, verdict) for every target of issue 11, from the after side."""
    rows = []
    for broker, result in after.items():
        overhead = result["latency"]["sync_overhead"]
        rows.append(
            (
                f"sync overhead p50 / p99, {BROKER_LABELS[broker]}",
                f"{_ms(overhead['p50'])} / {_ms(overhead['p99'])}",
                "5 / 25 ms",
                f"p50 {_lower_is_better(overhead['p50'], TARGETS['sync_overhead_p50_ms'])}; "
                f"p99 {_lower_is_better(overhead['p99'], TARGETS['sync_overhead_p99_ms'])}",
            )
        )
    main_broker = "postgres" if "postgres" in after else next(iter(after))
    main = after[main_broker]
    label = BROKER_LABELS[main_broker]
    for clients in (16, 64):
        point = _point(main, "async submit", clients)
        if point:
            rows.append(
                (
                    f"async submit, {clients} clients, {label}",
                    f"{point['rps']:,.0f} req/s, p99 {_ms(point['p99_ms'])}, "
                    f"{point['errors']} errors",
                    "500 req/s, p99 < 50 ms, no errors",
                    f"req/s {_higher_is_better(point['rps'], TARGETS['async_submit_rps'])}; "
                    f"p99 {_lower_is_better(point['p99_ms'], TARGETS['async_submit_p99_ms'])}; "
                    + ("no errors" if point["errors"] == 0 else f"{point['errors']} errors"),
                )
            )
    for clients in (16, 64):
        point = _point(main, "GET one", clients)
        if point:
            rows.append(
                (
                    f"GET one execution, {clients} clients, {label}",
                    f"{point['rps']:,.0f} req/s, p99 {_ms(point['p99_ms'])}",
                    "1,000 req/s, p99 < 20 ms",
                    f"req/s {_higher_is_better(point['rps'], TARGETS['get_one_rps'])}; "
                    f"p99 {_lower_is_better(point['p99_ms'], TARGETS['get_one_p99_ms'])}",
                )
            )
    sync16, sync64 = _point(main, "sync", 16), _point(main, "sync", 64)
    completions = main.get("cluster", {}).get("completions_per_s")
    if sync16 and sync64 and completions:
        bounded = sync64["rps"] >= 0.9 * completions
        rows.append(
            (
                f"sync execute throughput, {label}",
                f"{sync16['rps']:,.0f} req/s at 16 clients, {sync64['rps']:,.0f} at 64; "
                f"the cluster completes {completions:,.0f}/s",
                "bounded by the workers (64 clients reach the cluster's rate), not by 16 "
                "waiting threads",
                "**met**"
                if bounded
                else f"missed: 64 clients get {sync64['rps'] / completions:.0%} of the "
                "cluster's rate",
            )
        )
    for broker, result in after.items():
        rate = result.get("cluster", {}).get("completions_per_s")
        rows.append(
            (
                f"cluster completions, {BROKER_LABELS[broker]}",
                f"{_num(rate, 0)}/s",
                "100/s",
                _higher_is_better(rate, TARGETS["cluster_completions_per_s"]),
            )
        )
    idle, load = main.get("memory_idle", []), main.get("memory_load", [])
    if idle:
        rss_load = _total_mb(load, "rss_kb") if load else None
        rows.append(
            (
                f"whole service RSS ({len(idle)} processes), {label}",
                f"{_total_mb(idle, 'rss_kb'):,.0f} MB idle, {_num(rss_load, 0)} MB under load",
                "1,200 MB",
                _lower_is_better(
                    rss_load or _total_mb(idle, "rss_kb"), TARGETS["service_rss_mb"], " MB"
                ),
            )
        )
    return rows


def _by(results: list[dict]) -> dict[tuple[str, str], dict]:
    return {(result["side"], result["broker"]): result for result in results}


def section(run: dict) -> str:
    results = _by(run["results"])
    sides = [side for side in ("before", "after") if any(key[0] == side for key in results)]
    brokers = [broker for broker in BROKERS if any(key[1] == broker for key in results)]
    labels = run["sides"]
    lines = [
        SECTION_START,
        "## The service under load (`bench/bench_service.py`)",
        "",
        f"Run {run['date']} ({run['plan']} run, {run['duration_s'] / 60:.1f} minutes); load "
        f"average (1 min) {run['load'][0]:.2f} at the start, {run['load'][1]:.2f} at the end. "
        + (
            f"Before: {labels['before']}; after: {labels['after']}; both sides measured in "
            "this one run, one after the other for each broker, with this checkout's "
            "interpreter and packages."
            if "before" in labels
            else f"Checkout: {labels['after']} (no before side: `--before REV` adds one)."
        ),
        "",
        "Each side is a freshly bootstrapped service (`manage.py serve`: production settings, "
        "2 gunicorn workers x 8 threads, the `tasks` cluster with 2 workers and the "
        "`inference` cluster with the default model loaded) on 127.0.0.1, its own database "
        "and Redis number. Executions run `qa` on a `custom` provider whose engine "
        "(`bench/fast_engine.py`) answers a fixed completion; the in-process call is "
        "`provider_execute` of the same program, provider and inputs in the same checkout's "
        "code. The per-key rate limit and the queue caps are lifted for the run. Load: "
        f"{run['load_tool']} in its own process, {run['point_s']} s per point.",
        "",
    ]
    if "before" in labels:
        lines.append(f"<!-- bench_service before: {labels['before'].strip('`')} -->")
        lines.append("")
    lines += [
        "### Targets (issue 11), after",
        "",
        "| what | measured | target | verdict |",
        "|---|---|---|---|",
    ]
    after = {
        broker: results[("after", broker)] for broker in brokers if ("after", broker) in results
    }
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in target_rows(after)]
    lines += [
        "",
        "### 1. Sync and async execute, one client at a time: latency and overhead",
        "",
        "Overhead: the latency less the in-process call's p50. Async: from the request to its "
        "row's `finished_at` (followed with GETs 5 ms apart); accepted: the 202.",
        "",
        "| broker | side | in-process p50 | sync p50 / p95 / p99 | sync overhead p50 / p95 / "
        "p99 | async overhead p50 / p95 / p99 | async accepted p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for broker in brokers:
        for side in sides:
            result = results.get((side, broker))
            if result is None or "latency" not in result:
                continue
            latency = result["latency"]
            lines.append(
                f"| {BROKER_LABELS[broker]} | {side} | {result['inprocess']['p50']:.2f} ms | "
                + " / ".join(_ms(latency["sync"][p]) for p in ("p50", "p95", "p99"))
                + " | "
                + " / ".join(_ms(latency["sync_overhead"][p]) for p in ("p50", "p95", "p99"))
                + " | "
                + " / ".join(_ms(latency["async_overhead"][p]) for p in ("p50", "p95", "p99"))
                + f" | {_ms(latency['async_accept']['p50'])} |"
            )
    lines += [
        "",
        "![Sync execute latency per broker, before and after](docs/bench/latency.png)",
        "",
        "### 2. Throughput: async submit, GET one execution, sync execute",
        "",
        "Percentiles are of the answered requests: one still waiting when its point ended "
        "(sync requests behind 64 clients) is not counted, so those p99s are lower bounds. "
        "Errors: answers other than 2xx, and requests that got no answer. Each point starts "
        "once the executions of the one before have finished.",
        "",
        "| broker | kind | clients | before: req/s, p50, p99, errors | after: req/s, p50, p99, "
        "errors |",
        "|---|---|---|---|---|",
    ]
    for broker in brokers:
        for kind in KINDS:
            clients_seen = sorted(
                {
                    int(clients)
                    for side in sides
                    for clients in _points(results.get((side, broker), {}), kind)
                }
            )
            for clients in clients_seen:
                cells = []
                for side in ("before", "after"):
                    point = _point(results.get((side, broker), {}), kind, clients)
                    cells.append(
                        "-"
                        if point is None
                        else f"{point['rps']:,.0f}, {_ms(point['p50_ms'])}, "
                        f"{_ms(point['p99_ms'])}, {point['errors']}"
                        + ("" if point.get("drained", True) else " (queue not drained)")
                    )
                lines.append(
                    f"| {BROKER_LABELS[broker]} | {kind} | {clients} | {cells[0]} | {cells[1]} |"
                )
    lines += [
        "",
        "![Throughput against concurrency](docs/bench/throughput.png)",
        "",
        "### 3. The cluster: completions per second, enqueue to start",
        "",
        f"{run['cluster_executions']} async executions submitted by 16 clients; completions "
        "per second = finished executions over the span from the first `started_at` to the "
        "last `finished_at`.",
        "",
        "| broker | side | completions/s | enqueue -> start p50 / p99 | queued -> finished p50 /"
        " p99 | finished (succeeded) |",
        "|---|---|---|---|---|---|",
    ]
    for broker in brokers:
        for side in sides:
            cluster = results.get((side, broker), {}).get("cluster")
            if not cluster:
                continue
            wait = cluster.get("enqueue_to_start", {})
            whole = cluster.get("queued_to_finished", {})
            lines.append(
                f"| {BROKER_LABELS[broker]} | {side} | {_num(cluster.get('completions_per_s'))} | "
                f"{_ms(wait.get('p50'))} / {_ms(wait.get('p99'))} | {_ms(whole.get('p50'))} / "
                f"{_ms(whole.get('p99'))} | {cluster['finished']} ({cluster['succeeded']})"
                + ("" if cluster["drained"] else ", not all finished in time")
                + " |"
            )
    lines += memory_lines(results, sides, brokers)
    lines += profile_lines(results)
    lines.append(SECTION_END)
    return "\n".join(lines)


def memory_lines(results: dict, sides: list[str], brokers: list[str]) -> list[str]:
    broker = "postgres" if "postgres" in brokers else brokers[0]
    lines = [
        "",
        f"### 5. Resident memory of every process ({BROKER_LABELS[broker]})",
        "",
        "RSS and PSS (MB) from /proc/<pid>/smaps_rollup; idle after the warm-up, under load "
        "halfway through 64 sync clients. Processes of one role are added up (their count in "
        "brackets).",
        "",
        "| process | "
        + " | ".join(f"{side} idle RSS / PSS | {side} load RSS / PSS" for side in sides)
        + " |",
        "|---|" + "---|---|" * len(sides),
    ]
    snapshots = {
        (side, moment): results.get((side, broker), {}).get(f"memory_{moment}", [])
        for side in sides
        for moment in ("idle", "load")
    }
    roles = list(dict.fromkeys(item["role"] for snap in snapshots.values() for item in snap))
    for role in [*roles, None]:
        cells = []
        for side in sides:
            for moment in ("idle", "load"):
                items = [
                    item
                    for item in snapshots[(side, moment)]
                    if role is None or item["role"] == role
                ]
                cells.append(
                    f"{_total_mb(items, 'rss_kb'):,.0f} / {_total_mb(items, 'pss_kb'):,.0f} "
                    f"({len(items)})"
                    if items
                    else "-"
                )
        name = "**whole service**" if role is None else role
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def profile_lines(results: dict) -> list[str]:
    profiled = [
        (key, name, found)
        for key, result in results.items()
        for name, found in (result.get("profiles") or {}).items()
        if found
    ]
    if not profiled:
        return []
    lines = [
        "",
        "### Profiles under load (py-spy), after",
        "",
        "py-spy sampled one process at 100 Hz for the whole 64-client point (idle threads "
        "left out). Own: the frames where the samples were; under: the project's own "
        "functions by the share of samples below them. Raw collapsed stacks: "
        "`var/bench/profiles/` (`py-spy record --pid PID --format raw --function`, after "
        "`make bench`).",
    ]
    for (_side, broker), name, found in profiled:
        lines += [
            "",
            f"**{name}** ({BROKER_LABELS[broker]}, {found['samples']} samples)",
            "",
            "| own | share | under (project code) | share |",
            "|---|---|---|---|",
        ]
        own, under = found["own"][:10], found["project_inclusive"][:10]
        for index in range(max(len(own), len(under))):
            left = own[index] if index < len(own) else ("", None)
            right = under[index] if index < len(under) else ("", None)
            lines.append(
                f"| `{left[0]}` | {'' if left[1] is None else f'{left[1]:.0%}'} | "
                f"`{right[0]}` | {'' if right[1] is None else f'{right[1]:.0%}'} |".replace(
                    "``", ""
                )
            )
    return lines


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before",
        default=None,
        help="the commit to measure beside this checkout (default: the one BENCHMARKS.md's last "
        "run compared with; 'none' for no before side)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 2 minutes)")
    parser.add_argument(
        "--brokers",
        default=None,
        help=f"comma-separated, of {', '.join(BROKERS)} (default: all; postgres with --quick)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures without updating BENCHMARKS.md"
    )
    parser.add_argument(
        "--keep-before", action="store_true", help="leave the before worktree in var/bench/before"
    )
    args, _ = parser.parse_known_args()
    plan = QUICK if args.quick else FULL
    brokers = (
        args.brokers.split(",") if args.brokers else (["postgres"] if args.quick else list(BROKERS))
    )
    unknown = set(brokers) - set(BROKERS)
    if unknown:
        parser.error(f"unknown brokers: {', '.join(sorted(unknown))}")
    before = args.before if args.before is not None else default_before()
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    sides = []
    if before and before.lower() != "none":
        progress(f"making the before worktree of {before}")
        sides.append(before_side(before))
    sides.append(after_side())
    VAR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(PROFILES_DIR, ignore_errors=True)
    results = []
    try:
        for broker in brokers:
            for side in sides:
                progress(f"{side.name} ({side.label}), {BROKER_LABELS[broker]}")
                curve = plan.curve if broker == brokers[0] else plan.other_brokers_curve
                results.append(
                    measure(
                        side,
                        broker,
                        plan,
                        curve=curve,
                        profile=side.name == "after" and broker == brokers[0],
                    )
                )
    finally:
        if len(sides) > 1 and not args.keep_before:
            before_worktree_remove()
    run = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "plan": "quick" if args.quick else "full",
        "duration_s": time.monotonic() - started,
        "load": (load_start, os.getloadavg()[0]),
        "sides": {side.name: side.label for side in sides},
        "load_tool": load_tool(),
        "point_s": plan.point_s,
        "cluster_executions": plan.cluster_executions,
        "machine": machine_description(),
        "results": results,
    }
    RESULTS_FILE.write_text(json.dumps(run, indent=1, default=str))
    text = section(run)
    print(text)
    if not args.no_write:
        machine_section_write()
        benchmarks_section_write(text, start=SECTION_START, end=SECTION_END)
        import plots

        plots.plots_draw()
        progress(f"wrote {BENCHMARKS_FILE.name} and the plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
