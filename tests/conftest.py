"""Fixtures shared by the whole suite; app fixtures live in tests/<app>/conftest.py."""

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from core import notify
from tests.support.processes import stop

pytest_plugins = ["tests.support.fixtures", "tests.support.soak"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def notification_listeners_stopped(django_db_setup, django_db_blocker):
    """The notification listeners of this process hold a connection to the test database:
    closed before it is dropped (set up after the database, so torn down before it)."""
    yield
    notify.listeners_stop()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def subprocess_env(settings) -> dict[str, str]:
    """Environment for a child process (qcluster, server) that must use the test database."""
    database = settings.DATABASES["default"]
    url = (
        f"postgres://{database['USER']}:{database.get('PASSWORD') or ''}@{database['HOST']}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )
    return os.environ | {
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "Q_SYNC": "0",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def sqlite_env(tmp_path) -> dict[str, str]:
    """Environment for a child process run the way a new user's first run is: the local
    settings, the embedded SQLite database under a fresh var directory, no DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return env | {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DSPY_TOOLKIT_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SUPERUSER_PASSWORD": "quick-start-password",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def start_cluster(python, repo_root, subprocess_env, monkeypatch):
    """Start real `qcluster` processes on the test database; the test's own enqueues go to
    their broker instead of running inline (the test settings run tasks synchronously)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)
    processes = []

    def start(cluster_name: str | None = None, *, log: IO | None = None, **env) -> subprocess.Popen:
        """`log`, when given, receives the cluster's stdout and stderr."""
        extra = {"Q_CLUSTER_NAME": cluster_name} if cluster_name else {}
        process = subprocess.Popen(
            [python, "manage.py", "qcluster"],
            cwd=repo_root,
            env=subprocess_env | extra | env,
            stdout=log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        stop(process, timeout=30)
