"""Run every benchmark of the project (`make bench`); each prints its figures as it goes and
writes its section of BENCHMARKS.md, then the machine section and the plots are written.

`--quick`, `--before REV` and `--brokers` go to bench_service.py, `--no-write` to every one;
names (`bench/run.py bench_service bench_console`) run only those.
"""

import argparse
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# bench_local_serving.py writes var/bench/local_serving.json, which the throughput plot reads,
# so it runs before bench_service.py; the scripts that are not there yet are skipped.
BENCHMARKS = (
    "bench_mlx.py",
    "bench_prefix_cache.py",
    "bench_console.py",
    "bench_quality.py",
    "bench_local_serving.py",
    "bench_scale.py",
    "bench_service.py",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only these benchmarks (e.g. bench_service)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="bench_service.py's short run")
    parser.add_argument("--before", help="bench_service.py: the commit to compare with")
    parser.add_argument("--brokers", help="bench_service.py: which brokers")
    args = parser.parse_args()
    chosen = {name.removesuffix(".py") + ".py" for name in args.names}
    unknown = chosen - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    common = ["--no-write"] if args.no_write else []
    service_args = [
        *(["--quick"] if args.quick else []),
        *(["--before", args.before] if args.before else []),
        *(["--brokers", args.brokers] if args.brokers else []),
    ]
    for script in BENCHMARKS:
        if (chosen and script not in chosen) or not (BENCH_DIR / script).exists():
            continue
        extra = service_args if script == "bench_service.py" else []
        print(f"==> {script}", flush=True)
        command = [sys.executable, str(BENCH_DIR / script), *common, *extra]
        status = subprocess.run(command).returncode
        if status != 0:
            return status
    if not args.no_write:
        for script in ("machine.py", "plots.py"):
            print(f"==> {script}", flush=True)
            subprocess.run([sys.executable, str(BENCH_DIR / script)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
