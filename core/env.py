"""The one module that reads the process environment.

Every setting that comes from the environment is read here, so the list of knobs an
operator can turn is in one place (and in the README).
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


class MissingSetting(RuntimeError):
    """A setting that has no safe default is absent from the environment."""


def get(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


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
        "ENGINE": "django.db.backends.sqlite3",
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
    return config
