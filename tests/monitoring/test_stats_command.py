"""`manage.py monitoring_stats`: the last N hours per signature and per provider, as a table."""

import subprocess
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from executions.models import Execution
from tests.support.engines import ECHO_ENGINE
from tests.support.factories import ProviderFactory, SignatureVersionFactory


def _stats(*args: str) -> str:
    out = StringIO()
    call_command("monitoring_stats", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def executions(db):
    """qa on `echo`: succeeded in 1, 2, 3 s and failed in 4 s, 30 minutes ago; one more
    success 3 hours ago."""
    version = SignatureVersionFactory(signature__name="qa")
    provider = ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    now = timezone.now()
    for seconds, status, ago in [
        (1.0, "succeeded", 30),
        (2.0, "succeeded", 30),
        (3.0, "succeeded", 30),
        (4.0, "failed", 30),
        (5.0, "succeeded", 180),
    ]:
        queued_at = now - timedelta(minutes=ago)
        Execution.objects.create(
            signature_version=version,
            requested_provider=provider,
            provider=provider if status == "succeeded" else None,
            status=status,
            queued_at=queued_at,
            started_at=queued_at,
            finished_at=queued_at + timedelta(seconds=seconds),
            execution_time_s=seconds,
        )


def _row(output: str, label: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.startswith(label + " "))


def test_it_prints_a_table_per_signature_and_per_provider(executions):
    output = _stats("--hours", "1")
    assert _row(output, "signature") == [
        "signature",
        "count",
        "succeeded",
        "failed",
        "success",
        "p50",
        "p95",
        "p99",
    ]
    assert _row(output, "qa") == ["qa", "4", "3", "1", "75.0%", "2.000s", "4.000s", "4.000s"]
    assert _row(output, "echo")[:5] == ["echo", "4", "3", "1", "75.0%"]


def test_more_hours_take_in_older_executions(executions):
    assert _row(_stats("--hours", "4"), "qa")[:3] == ["qa", "5", "4"]


def test_an_empty_window_says_so(db):
    output = _stats()
    assert "No executions per signature in this window." in output
    assert "No executions per provider in this window." in output


@pytest.mark.parametrize("hours", ["0", "721", "-3"])
def test_hours_out_of_bounds_are_refused(db, hours):
    with pytest.raises(CommandError, match="between 1 and 720"):
        _stats("--hours", hours)


def test_hours_that_are_not_a_number_are_refused(db):
    with pytest.raises(CommandError, match="invalid int value"):
        _stats("--hours", "many")


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        call_command("monitoring_stats", "--help")
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--hours" in help_text and "p50, p95, p99" in help_text


def test_a_bad_argument_exits_non_zero(python, repo_root, subprocess_env):
    result = subprocess.run(
        [python, "manage.py", "monitoring_stats", "--hours", "0"],
        cwd=repo_root,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--hours must be between 1 and 720" in result.stderr
