"""The one module that reads the process environment.

Every setting that comes from the environment is read here, so the list of knobs an
operator can turn is in one place (and in the README).
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


# The toolkit's own variables. A provider's `api_key_env` may never name one of them: the
# value would be sent to the provider's endpoint as a bearer token. These are the variables
# of the README's configuration table and the ones the toolkit's libraries read; `get` adds
# every name it is asked for at runtime (`READ_NAMES`), so a new setting is covered as soon
# as it is read.
PROJECT_NAMES = frozenset(
    {
        "DJANGO_SETTINGS_MODULE",
        "DATABASE_URL",
        "DATABASE_CONN_MAX_AGE",
        "REDIS_URL",
        "DJANGO_SECRET_KEY",
        "DJANGO_ALLOWED_HOSTS",
        "DJANGO_CSRF_TRUSTED_ORIGINS",
        "DJANGO_DEBUG",
        "DJANGO_SECURE_SSL_REDIRECT",
        "DJANGO_SECURE_HSTS_SECONDS",
        "DJANGO_SUPERUSER_USERNAME",
        "DJANGO_SUPERUSER_PASSWORD",
        "DJANGO_SUPERUSER_EMAIL",
        "DSPY_TOOLKIT_HOST",
        "DSPY_TOOLKIT_PORT",
        "DSPY_TOOLKIT_VAR_DIR",
        "DSPY_TOOLKIT_FAST_BLAS",
        "DSPY_TOOLKIT_MLX_MAX_BATCH",
        "DSPY_TOOLKIT_MLX_PREFIX_CACHE_MB",
        "WEB_CONCURRENCY",
        "WEB_THREADS",
        "Q_WORKERS",
        "Q_TIMEOUT",
        "Q_INFERENCE_WORKERS",
        "Q_INFERENCE_TIMEOUT",
        "Q_INFERENCE_CLUSTERS",
        "Q_SYNC",
        "Q_CLUSTER_NAME",
        "LOG_LEVEL",
        "TEST_DATABASE_NAME",
        "TEST_REDIS_URL",
        "PROMETHEUS_MULTIPROC_DIR",
        "LD_PRELOAD",
        "OPENBLAS_NUM_THREADS",
    }
)
READ_NAMES: set[str] = set()


class MissingSetting(RuntimeError):
    """A setting that has no safe default is absent from the environment."""


def get(name: str, default: str | None = None) -> str | None:
    READ_NAMES.add(name)
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def project_names() -> frozenset[str]:
    """Every variable the toolkit reads as its own configuration (so far, in this process,
    plus the fixed list)."""
    return PROJECT_NAMES | READ_NAMES


def get_secret(name: str) -> str | None:
    """The value of a variable named by runtime data (a provider's `api_key_env`): not one of
    the toolkit's own settings, so not recorded in `READ_NAMES`."""
    value = os.environ.get(name)
    return value or None


def secret_values(*, name_allowed) -> list[str]:
    """The values the toolkit must never show: its own secrets (the secret key, the passwords
    in the database and Redis URLs, the admin password) and every variable whose name
    `name_allowed(name)` accepts as a provider key variable."""
    values = [
        os.environ.get(name)
        for name in ("DJANGO_SECRET_KEY", "DJANGO_SUPERUSER_PASSWORD", "METRICS_BEARER_TOKEN")
    ]
    for name in ("DATABASE_URL", "REDIS_URL", "TEST_REDIS_URL"):
        url = os.environ.get(name)
        if url:
            values.append(urlsplit(url).password)
    values.extend(value for name, value in os.environ.items() if name_allowed(name))
    return [value for value in values if value]


def require(name: str) -> str:
    value = get(name)
    if value is None:
        raise MissingSetting(f"The environment variable {name} must be set in production.")
    return value


def get_bool(name: str, default: bool = False) -> bool:
    value = get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def get_int(name: str, default: int) -> int:
    value = get(name)
    return default if value is None else int(value)


def get_float(name: str, default: float) -> float:
    value = get(name)
    return default if value is None else float(value)


def get_list(name: str, default: list[str] | None = None) -> list[str]:
    value = get(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def var_dir() -> Path:
    """Where generated data lives (SQLite file, models, metrics); git-ignored."""
    return Path(get("DSPY_TOOLKIT_VAR_DIR", str(BASE_DIR / "var")))


def sqlite_database() -> dict:
    path = var_dir() / "db.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        # django-prometheus' wrapper of Django's backend: it counts connections, queries,
        # their durations and errors for /metrics.
        "ENGINE": "django_prometheus.db.backends.sqlite3",
        "NAME": str(path),
        # The web process and the workers write at once: WAL lets readers proceed during a
        # write, IMMEDIATE takes the write lock at BEGIN (no lock upgrade deadlock), and the
        # timeout makes a writer wait for the lock instead of failing with "database is locked".
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                "PRAGMA busy_timeout=20000;"
                "PRAGMA foreign_keys=ON;"
            ),
        },
    }


def database(default_url: str | None = None) -> dict:
    """`DATABASE_URL` selects the database; without it, the embedded SQLite file."""
    url = get("DATABASE_URL", default_url)
    if url is None:
        return sqlite_database()
    config = dj_database_url.parse(url, conn_max_age=get_int("DATABASE_CONN_MAX_AGE", 60))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        return sqlite_database() | {"NAME": config["NAME"]}
    config["CONN_HEALTH_CHECKS"] = True
    # django-prometheus' wrapper of the same backend (see `sqlite_database`).
    if config["ENGINE"] == "django.db.backends.postgresql":
        config["ENGINE"] = "django_prometheus.db.backends.postgresql"
    return config
