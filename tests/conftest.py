"""Fixtures shared by the whole suite; app fixtures live in tests/<app>/conftest.py."""

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent


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
def python() -> str:
    return sys.executable
