"""Load from a separate process, bounded in time (and in count), to 127.0.0.1 only: `wrk` (Debian's
package) when it is installed, else an asyncio + httpx client run as its own process
(`python bench/load.py SPEC_JSON`). Both answer the same `LoadResult`.

wrk spends about a twentieth of the client CPU httpx does per request (measured here: httpx
0.78 ms of CPU a request), which matters on a 2-core machine where the client shares the
cores with the service it measures; `apt-get install wrk` for the closer figures.
"""

import asyncio
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

WRK_MARKER = "BENCH-WRK-RESULT "


def percentile(values: list[float], fraction: float) -> float | None:
    """The `fraction` quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class LoadSpec:
    """What to send: one request, repeated by `clients` connections for at most `duration_s`
    seconds and (when set) `max_requests` requests in all."""

    url: str
    clients: int
    duration_s: float
    method: str = "GET"
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    max_requests: int | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if urlsplit(self.url).hostname not in {"127.0.0.1", "localhost"}:
            raise ValueError(f"load goes to 127.0.0.1 only, not {self.url!r}")


@dataclass(frozen=True)
class LoadResult:
    tool: str
    clients: int
    requests: int
    duration_s: float
    statuses: dict[str, int]
    socket_errors: int
    p50_ms: float | None
    p99_ms: float | None
    client_cpu_s: float | None = None

    @property
    def errors(self) -> int:
        """Answers that were not 2xx, and requests that got no answer."""
        failed = sum(count for status, count in self.statuses.items() if not status.startswith("2"))
        return failed + self.socket_errors

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"errors": self.errors, "rps": self.rps}


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for ASCII


def wrk_script(spec: LoadSpec) -> str:
    """The Lua script that makes wrk send `spec`'s request and print the status counts and
    percentiles as one JSON line."""
    headers = "\n".join(
        f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}"
        for name, value in spec.headers.items()
    )
    return f"""
wrk.method = {_lua_string(spec.method)}
wrk.body = {_lua_string(spec.body)}
{headers}
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {{}}
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local parts = {{}}
  local totals = {{}}
  for _, thread in ipairs(threads) do
    for key, count in pairs(thread:get("statuses")) do
      totals[key] = (totals[key] or 0) + count
    end
  end
  for key, count in pairs(totals) do
    table.insert(parts, string.format('"%s": %d', key, count))
  end
  local errors = summary.errors
  io.write(string.format(
    '{WRK_MARKER}{{"requests": %d, "duration_us": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d, "statuses": {{%s}}}}\\n',
    summary.requests, summary.duration, errors.connect + errors.read + errors.write
      + errors.timeout, latency:percentile(50), latency:percentile(99),
    table.concat(parts, ", ")))
end
"""


def wrk_run(spec: LoadSpec, *, wrk: str = "wrk") -> LoadResult:
    """`spec` through wrk, for whole seconds (wrk runs its full duration whatever it sent, so a
    spec bounded in count goes to the httpx client instead: see `load_run`)."""
    if spec.max_requests is not None:
        raise ValueError("wrk runs for a duration; send a spec bounded in count with httpx_run")
    threads = min(2, spec.clients)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(spec))
    try:
        command = [
            wrk,
            f"-t{threads}",
            f"-c{spec.clients}",
            f"-d{max(1, math.ceil(spec.duration_s))}s",
            f"--timeout={max(1, math.ceil(spec.timeout_s))}s",
            "-s",
            script.name,
            spec.url,
        ]
        finished = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=spec.duration_s + spec.timeout_s + 30,
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next(
        (line for line in finished.stdout.splitlines() if line.startswith(WRK_MARKER)), None
    )
    if line is None:
        raise RuntimeError(f"wrk gave no result: {finished.stdout}\n{finished.stderr}")
    figures = json.loads(line.removeprefix(WRK_MARKER))
    answered = sum(figures["statuses"].values())
    return LoadResult(
        tool="wrk",
        clients=spec.clients,
        # wrk counts a request once it is answered; one that timed out has no status.
        requests=max(figures["requests"], answered),
        duration_s=figures["duration_us"] / 1e6,
        statuses=figures["statuses"],
        socket_errors=figures["socket_errors"],
        p50_ms=figures["p50_us"] / 1000 if answered else None,
        p99_ms=figures["p99_us"] / 1000 if answered else None,
    )


async def _httpx_load(spec: LoadSpec) -> LoadResult:
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    socket_errors = 0
    sent = 0
    deadline = time.perf_counter() + spec.duration_s
    limits = httpx.Limits(max_connections=spec.clients, max_keepalive_connections=spec.clients)
    async with httpx.AsyncClient(limits=limits, timeout=spec.timeout_s) as client:

        async def one_client() -> None:
            nonlocal sent, socket_errors
            while time.perf_counter() < deadline and (
                spec.max_requests is None or sent < spec.max_requests
            ):
                sent += 1
                started = time.perf_counter()
                try:
                    answer = await client.request(
                        spec.method, spec.url, content=spec.body or None, headers=spec.headers
                    )
                except httpx.HTTPError:
                    socket_errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                key = str(answer.status_code)
                statuses[key] = statuses.get(key, 0) + 1

        cpu_started = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(spec.clients)))
        elapsed = time.perf_counter() - started
    return LoadResult(
        tool="httpx",
        clients=spec.clients,
        requests=len(latencies),
        duration_s=elapsed,
        statuses=statuses,
        socket_errors=socket_errors,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        client_cpu_s=time.process_time() - cpu_started,
    )


def httpx_run(spec: LoadSpec) -> LoadResult:
    """The httpx client in a process of its own, so that its CPU is not the benchmark's."""
    finished = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), json.dumps(asdict(spec))],
        capture_output=True,
        text=True,
        timeout=spec.duration_s + spec.timeout_s + 30,
        check=True,
    )
    figures = json.loads(finished.stdout.strip().splitlines()[-1])
    return LoadResult(**figures)


def load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "httpx"


def load_run(spec: LoadSpec, *, tool: str | None = None) -> LoadResult:
    """`spec` through wrk when it is installed and the spec is bounded in time only, else
    through the httpx client."""
    use_wrk = (tool or load_tool()) == "wrk" and spec.max_requests is None
    return wrk_run(spec) if use_wrk else httpx_run(spec)


if __name__ == "__main__":
    result = asyncio.run(_httpx_load(LoadSpec(**json.loads(sys.argv[1]))))
    print(json.dumps(asdict(result)))
