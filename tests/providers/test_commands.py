import io
import itertools
import json
import subprocess

import pytest
from django.core.management import CommandError, call_command, load_command_class

from providers import breakers, services
from providers.models import BreakerEvent, CircuitBreaker
from tests.support.engines import BROKEN_ENGINE
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    output = io.StringIO()
    call_command(*args, stdout=output)
    return output.getvalue()


def test_hardware_report_as_text_and_json():
    text = run("providers_hardware")
    assert "mlx_backend" in text
    report = json.loads(run("providers_hardware", "--json"))
    assert report["cpu_count"] >= 1
    assert "mlx_version" in report


def test_list_without_providers():
    assert "No provider is configured" in run("providers_list")


def test_list_shows_fallbacks():
    main, spare = ProviderFactory(name="main"), ProviderFactory(name="spare", enabled=False)
    services.provider_set_fallbacks(provider=main, fallbacks=[spare])
    lines = run("providers_list").splitlines()
    assert lines[0] == (
        "main  custom  scripted  enabled  fallbacks: spare  breaker: closed, no calls recorded"
    )
    assert lines[1] == (
        "spare  custom  scripted  disabled  fallbacks: -  breaker: closed, no calls recorded"
    )


def test_check_runs_a_short_question():
    ProviderFactory(name="scripted")
    output = run("providers_check", "scripted")
    assert "answer: Paris" in output
    assert "tokens:" in output


def test_check_reports_an_unknown_provider():
    with pytest.raises(CommandError, match="No provider named 'nope'"):
        run("providers_check", "nope")


def test_check_reports_a_failing_provider():
    ProviderFactory(name="down", engine_path=BROKEN_ENGINE)
    with pytest.raises(CommandError, match=r"LMServerError: .*the backend is down"):
        run("providers_check", "down")


@pytest.mark.slow_model
def test_install_default_model_is_idempotent(default_model_dir):
    first = run("providers_install_default_model")
    second = run("providers_install_default_model")
    assert "Provider 'local-default' (mlx)" in first
    assert str(default_model_dir) in second
    provider = services.Provider.objects.get(name="local-default")
    assert provider.model_path() == default_model_dir
    assert services.Provider.objects.count() == 1


def test_install_default_model_reports_failures(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(CommandError, match="Installing the default model failed"):
        run("providers_install_default_model", "--models-dir", str(blocked / "models"))


def test_list_reads_fallbacks_in_a_fixed_number_of_queries(django_assert_max_num_queries):
    providers = [ProviderFactory(name=f"p{index}") for index in range(4)]
    for provider, fallback in itertools.pairwise(providers):
        services.provider_set_fallbacks(provider=provider, fallbacks=[fallback])
    with django_assert_max_num_queries(3):
        run("providers_list")


def test_list_shows_each_breaker_as_a_call_would_find_it_now():
    opened, forced = ProviderFactory(name="opened"), ProviderFactory(name="forced")
    ProviderFactory(name="quiet")
    # Opened long ago: its wait is over, the next call is a trial.
    breakers.breaker_get_or_create(provider=opened)
    CircuitBreaker.objects.filter(provider=opened).update(
        state="open", state_changed_at="2026-01-01T12:00:00Z"
    )
    breakers.breaker_force_open(provider=forced)
    lines = run("providers_list").splitlines()
    assert lines[0].endswith("breaker: open (forced), stays open until reset, no calls recorded")
    assert lines[1].endswith(
        "breaker: half_open (ready for a trial since 2026-01-01 12:00:30 UTC), no calls recorded"
    )
    assert lines[2].endswith("breaker: closed, no calls recorded")


def test_breaker_command_lists_every_breaker_without_writing():
    ProviderFactory(name="alpha")
    beta = ProviderFactory(name="beta")
    breakers.breaker_force_open(provider=beta, reason="maintenance")
    output = run("providers_breaker")
    lines = output.splitlines()
    assert lines[0] == "alpha: closed, no calls recorded"
    assert lines[1] == "beta: open (forced), stays open until reset, no calls recorded"
    assert lines[2].startswith("  last transition: ")
    assert lines[2].endswith(" closed -> open: maintenance")
    assert CircuitBreaker.objects.count() == 1


def test_breaker_command_forces_open_and_resets_with_a_reason():
    provider = ProviderFactory(name="remote")
    output = run("providers_breaker", "remote", "--force-open", "--reason", "upgrade")
    assert output.startswith("remote: open (forced)")
    assert "closed -> open: upgrade" in output
    run("providers_breaker", "remote", "--reset")
    breaker = CircuitBreaker.objects.get(provider=provider)
    assert (breaker.state, breaker.forced) == ("closed", False)
    assert list(BreakerEvent.objects.values_list("to_state", "reason")) == [
        ("closed", "reset from the command line"),
        ("open", "upgrade"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--reset",), "Name the provider"),
        (("--force-open",), "Name the provider"),
        (("--show",), "Name the provider"),
        (("remote", "--reason", "why"), "--reason goes with --force-open or --reset"),
        (("nope", "--reset"), "No provider named 'nope'"),
        (("remote", "--reset", "--force-open"), "not allowed with argument"),
    ],
)
def test_breaker_command_refuses_bad_arguments(args, message):
    ProviderFactory(name="remote")
    with pytest.raises(CommandError, match=message):
        run("providers_breaker", *args)
    assert not BreakerEvent.objects.exists()


def test_breaker_command_help_names_every_action():
    command = load_command_class("providers", "providers_breaker")
    text = command.create_parser("manage.py", "providers_breaker").format_help()
    for option in ("--force-open", "--reset", "--show", "--reason", "leave out to list all"):
        assert option in text


def test_breaker_command_exits_non_zero_on_bad_arguments(python, repo_root, subprocess_env):
    finished = subprocess.run(
        [python, "manage.py", "providers_breaker", "--reset"],
        cwd=repo_root,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 1
    assert "CommandError: Name the provider" in finished.stderr
