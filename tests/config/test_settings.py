import subprocess

import pytest
from django.core.management import call_command
from django.db import connection


def test_suite_runs_on_postgresql():
    assert connection.vendor == "postgresql"


def test_django_q_defaults_neither_duplicate_nor_lose_work(settings):
    cluster = settings.Q_CLUSTER
    assert cluster["timeout"] < cluster["retry"]
    assert cluster["max_attempts"] >= 1
    assert cluster["ack_failures"] is True
    inference = cluster["ALT_CLUSTERS"][settings.Q_INFERENCE_CLUSTER]
    assert inference["workers"] == 1
    assert inference["timeout"] < inference["retry"]


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_system_checks_are_clean():
    call_command("check", fail_level="WARNING")


def _run_check(python, repo_root, env):
    return subprocess.run(
        [python, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_check_is_clean_with_production_settings(python, repo_root, subprocess_env):
    env = subprocess_env | {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "a-long-random-production-secret-" + "x" * 40,
        "DJANGO_ALLOWED_HOSTS": "toolkit.example.com",
    }
    result = _run_check(python, repo_root, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"])
def test_production_settings_refuse_to_start_without_required_env(
    python, repo_root, subprocess_env, missing
):
    env = subprocess_env | {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "a-long-random-production-secret-" + "x" * 40,
        "DJANGO_ALLOWED_HOSTS": "toolkit.example.com",
    }
    del env[missing]
    result = _run_check(python, repo_root, env)
    assert result.returncode != 0
    assert missing in result.stderr
