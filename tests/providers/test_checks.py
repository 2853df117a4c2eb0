import shutil

import pytest
from django.core import checks
from django.core.management import call_command
from django.db import connection

from providers.checks import check_providers
from providers.models import Provider
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db


def ids() -> list[str]:
    return [message.id for message in check_providers(databases=["default"])]


def local_provider_whose_model_went_away(tmp_path, **fields) -> Provider:
    """An `mlx` provider, valid when it was created, whose model directory was deleted since."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    provider = ProviderFactory(kind="mlx", model=str(model_dir), **fields)
    shutil.rmtree(model_dir)
    return provider


def stored_past_the_service(**fields) -> Provider:
    """A row the service refuses, written straight to the table, past `full_clean`. The checks
    exist for such rows (written before a rule existed, by a data migration or by raw SQL, or
    naming an engine module removed since), which neither the service nor `ProviderFactory`
    (which creates through the service) can make."""
    provider = ProviderFactory.build(**fields)
    provider.save()
    return provider


def test_no_provider_is_not_an_error():
    assert check_providers(databases=["default"]) == []
    call_command("check")


def test_openai_key_variable_unset(monkeypatch):
    # The variable was set when the provider was configured and is gone from this process now.
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_CHECKS_TEST", "secret-value")
    ProviderFactory(
        kind="openai", base_url="http://h/v1", api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_CHECKS_TEST"
    )
    monkeypatch.delenv("DSPY_TOOLKIT_PROVIDER_KEY_CHECKS_TEST")
    [message] = check_providers(databases=["default"])
    assert message.id == "providers.W001"
    assert message.level == checks.WARNING
    assert "DSPY_TOOLKIT_PROVIDER_KEY_CHECKS_TEST" in message.msg
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_CHECKS_TEST", "secret-value")
    assert check_providers(databases=["default"]) == []


def test_mlx_directory_missing(tmp_path):
    local_provider_whose_model_went_away(tmp_path)
    assert ids() == ["providers.W002"]


def test_openai_without_base_url():
    stored_past_the_service(kind="openai", base_url="")
    assert ids() == ["providers.W003"]


def test_custom_engine_not_importable():
    stored_past_the_service(engine_path="gone.module.Engine")
    assert ids() == ["providers.W004"]


def test_disabled_providers_are_not_checked(tmp_path):
    local_provider_whose_model_went_away(tmp_path, enabled=False)
    assert ids() == []


def test_valid_providers_pass(tiny_model_dir):
    ProviderFactory(kind="mlx", model=str(tiny_model_dir))
    ProviderFactory()
    assert ids() == []


def test_missing_table_is_skipped():
    # Before migrations run the table is absent: the check must pass without querying it.
    # PostgreSQL DDL is transactional, so the test's rollback brings the tables back.
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {Provider._meta.db_table} CASCADE")
    assert check_providers(databases=["default"]) == []


def test_runs_only_when_a_database_is_named(tmp_path, capsys):
    local_provider_whose_model_went_away(tmp_path)
    assert check_providers() == []
    call_command("check", "--database", "default")
    assert "providers.W002" in capsys.readouterr().err
