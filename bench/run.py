"""Run every benchmark of the project (`make bench`); each prints its figures as it goes."""

import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = ("bench_mlx.py", "bench_prefix_cache.py", "bench_console.py", "bench_quality.py")


def main() -> int:
    for script in BENCHMARKS:
        print(f"==> {script}", flush=True)
        status = subprocess.run([sys.executable, str(BENCH_DIR / script), *sys.argv[1:]]).returncode
        if status != 0:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
