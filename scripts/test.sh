#!/usr/bin/env bash
# The whole check: install, make sure PostgreSQL is reachable, lint, format check and the
# import contracts, then the full pytest suite (which includes the quick-start smoke run on
# SQLite).
source "$(dirname "$0")/_venv.sh"
source "$(dirname "$0")/ensure_postgres.sh"
ensure_venv dev
ensure_fast_blas
ensure_chromium
ensure_postgres
export DJANGO_SETTINGS_MODULE=config.settings.test

echo "==> ruff check"
.venv/bin/ruff check .
echo "==> ruff format --check"
.venv/bin/ruff format --check .
echo "==> lint-imports (the dependency graph, pyproject.toml [tool.importlinter])"
.venv/bin/lint-imports

echo "==> pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
