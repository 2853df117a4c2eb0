# Sourced by start.sh and test.sh: creates .venv with Python 3.11 and installs the project
# (with the given extras) only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)'; then
      echo "$candidate"
      return 0
    fi
  done
  echo "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  local extras="$1"
  mkdir -p var
  if [ ! -x .venv/bin/python ]; then
    echo "==> Creating the virtual environment in .venv"
    "$(find_python)" -m venv .venv
    .venv/bin/python -m pip install --upgrade pip >var/pip-install.log 2>&1
  fi
  local stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  # A dev install also satisfies a plain one; either is redone when pyproject.toml changes.
  if [ -f "$stamp" ] && { [ -z "$extras" ] || grep -qx "$extras" "$stamp"; }; then
    return 0
  fi
  echo "==> Installing dependencies into .venv (log: var/pip-install.log)"
  if ! .venv/bin/python -m pip install -e ".${extras:+[$extras]}" >var/pip-install.log 2>&1; then
    tail -n 40 var/pip-install.log >&2
    echo "pip install failed; the whole log is in var/pip-install.log" >&2
    return 1
  fi
  rm -f .venv/.installed-*
  echo "${extras}" >"$stamp"
}

# Debian packages are installed only when this runs as root on a machine with apt; otherwise
# each caller says what is missing and what that costs.
can_apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null
}

apt_install() {
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# MLX's Linux CPU wheel bundles the reference BLAS; Debian's OpenBLAS makes local inference
# many times faster (see BENCHMARKS.md). Installed when running as root with apt; otherwise
# the app runs without it and says so in the hardware report.
ensure_fast_blas() {
  [ "$(uname -s)" = Linux ] || return 0
  ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1 && return 0
  if can_apt_install; then
    echo "==> Installing OpenBLAS (libopenblas0-pthread) for fast local inference"
    apt_install libopenblas0-pthread
  else
    echo "    note: libopenblas0-pthread is not installed; local inference will be slower" >&2
  fi
}

# The browser tests drive Debian's Chromium through Playwright (never a browser Playwright
# downloads). Installed when running as root with apt; otherwise those tests are skipped,
# except under CI, where a missing browser fails them.
ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  if can_apt_install; then
    echo "==> Installing Chromium (Debian's chromium) for the browser tests"
    apt_install chromium
  else
    echo "    note: /usr/bin/chromium is missing; the browser tests will be skipped" >&2
  fi
}

# The load generator of `make bench` (Debian's wrk: a twentieth of an HTTP client's CPU per
# request, which matters on a machine it shares with the service it measures).
ensure_wrk() {
  command -v wrk >/dev/null && return 0
  if can_apt_install; then
    echo "==> Installing wrk (Debian's) for the benchmarks"
    apt_install wrk || true
  fi
  command -v wrk >/dev/null || echo "    note: wrk is missing; the benchmarks load with an httpx client" >&2
}
