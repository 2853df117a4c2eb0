import io
import itertools
import json

import pytest
from django.core.management import CommandError, call_command

from providers import services
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
    assert lines[0] == "main  custom  scripted  enabled  fallbacks: spare"
    assert lines[1] == "spare  custom  scripted  disabled  fallbacks: -"


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
