"""The test suite: always PostgreSQL (DATABASE_URL, else the local server on 127.0.0.1:5432)."""

from core import env

from .base import *  # noqa: F403

DATABASES = {"default": env.database("postgres://postgres@127.0.0.1:5432/dspy_toolkit")}
# Several suites may run at once on one server (developers, CI): each can pick its own name.
DATABASES["default"]["TEST"] = {"NAME": env.get("TEST_DATABASE_NAME", "test_dspy_toolkit")}
DATABASES["default"]["CONN_MAX_AGE"] = 0

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
Q_CLUSTER = Q_CLUSTER | {"sync": env.get_bool("Q_SYNC", True)}  # noqa: F405
LOGGING["root"]["level"] = env.get("LOG_LEVEL", "WARNING")  # noqa: F405
# The tests' own custom metrics.
EVALUATIONS_CUSTOM_METRIC_MODULES = ["tests"]
