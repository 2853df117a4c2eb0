# Sourced by test.sh: makes sure a PostgreSQL server is reachable and exports DATABASE_URL.
# Order: DATABASE_URL as given; else the local server on 127.0.0.1:5432 (started if installed
# but stopped; installed from Debian's packages when running as root and absent).
pg_reachable() {
  .venv/bin/python - "$1" <<'PY'
import sys

import psycopg

try:
    psycopg.connect(sys.argv[1], connect_timeout=3).close()
except psycopg.Error as exc:
    print(f"    not reachable: {exc}".splitlines()[0], file=sys.stderr)
    sys.exit(1)
PY
}

ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    echo "==> Using DATABASE_URL"
    pg_reachable "$DATABASE_URL"
    return
  fi
  local url="postgres://postgres@127.0.0.1:5432/postgres"
  if pg_reachable "$url" 2>/dev/null; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/dspy_toolkit"
    echo "==> Using the local PostgreSQL on 127.0.0.1:5432"
    return
  fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      echo "No PostgreSQL reachable and cannot install one: set DATABASE_URL" >&2
      return 1
    fi
    echo "==> Installing PostgreSQL from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  echo "==> Starting the local PostgreSQL"
  local version
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    su postgres -c "pg_isready -q -h 127.0.0.1 -p 5432" && break
    sleep 1
  done
  if ! pg_reachable "$url" 2>/dev/null; then
    # A fresh Debian install asks for a password over TCP: give the postgres role one.
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
    url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
    pg_reachable "$url"
    export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/dspy_toolkit"
  else
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/dspy_toolkit"
  fi
}
