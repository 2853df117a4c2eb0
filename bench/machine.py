"""The machine the benchmarks ran on, for the top of BENCHMARKS.md (`python bench/machine.py`
writes that section alone): CPU, cores, memory, OS, Python, PostgreSQL, Redis, the versions of
the packages the figures depend on, and the load tools."""

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks_file import BENCHMARKS_FILE, benchmarks_section_write

SECTION_START = "<!-- machine: start -->"
SECTION_END = "<!-- machine: end -->"
PACKAGES = ("django", "django-q2", "dspy", "mlx", "mlx-lm", "gunicorn", "psycopg", "redis")
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                name = line.split("=", 1)[1].strip('"')
                return f"{name}, {platform.system()} {platform.release()}"
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def _postgres_version() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as connection:
            return connection.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:
        return f"not reachable ({type(exc).__name__})"


def _redis_version() -> str:
    try:
        import redis

        return redis.Redis.from_url(REDIS_URL, socket_timeout=3).info("server")["redis_version"]
    except Exception as exc:
        return f"not reachable ({type(exc).__name__})"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _tool_version(command: list[str]) -> str:
    if not shutil.which(command[0]):
        return "not installed"
    finished = subprocess.run(command, capture_output=True, text=True, timeout=10)
    text = (finished.stdout or finished.stderr).strip().splitlines()
    return text[0] if text else "installed"


def machine_description() -> dict[str, str]:
    memory = _memory_gib()
    described = {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{memory:.1f} GiB" if memory is not None else "unknown",
        "OS": _os_name(),
        "Python": platform.python_version(),
        "PostgreSQL": _postgres_version(),
        "Redis": _redis_version(),
    }
    described |= {name: _package_version(name) for name in PACKAGES}
    described["wrk"] = _tool_version(["wrk", "--version"])
    described["py-spy"] = _tool_version([str(Path(sys.executable).parent / "py-spy"), "--version"])
    return described


def machine_section(described: dict[str, str]) -> str:
    rows = "\n".join(f"| {name} | {value} |" for name, value in described.items())
    others = ", ".join(
        f"`bench/{path.name}`"
        for path in sorted(Path(__file__).resolve().parent.glob("bench_*.py"))
        if path.name != "bench_service.py"
    )
    return f"""{SECTION_START}
## The machine

Every figure below was measured on this machine (each section also says when it last ran, and
its load average). The commands that measure them again:

- `make bench` (`.venv/bin/python bench/run.py`): every benchmark, one after the other, then
  the plots; `make bench ARGS=--quick` runs bench_service.py's short version.
- each one alone: `.venv/bin/python bench/bench_service.py [--quick] [--before REV]`, and
  the same way {others}; `bench/plots.py` draws the plots from the last runs' figures
  (`var/bench/*.json`), and `bench/machine.py` writes this section.

| | |
|---|---|
{rows}
{SECTION_END}"""


def machine_section_write() -> None:
    """The machine section, kept at the top of BENCHMARKS.md (right under its title)."""
    section = machine_section(machine_description())
    text = BENCHMARKS_FILE.read_text() if BENCHMARKS_FILE.exists() else "# Benchmarks\n"
    if SECTION_START not in text:
        title, _, rest = text.partition("\n")
        BENCHMARKS_FILE.write_text(f"{title}\n\n{section}\n\n{rest.lstrip(chr(10))}")
        return
    benchmarks_section_write(section, start=SECTION_START, end=SECTION_END)


if __name__ == "__main__":
    described = machine_description()
    for name, value in described.items():
        print(f"{name}: {value}")
    if "--no-write" not in sys.argv:
        machine_section_write()
