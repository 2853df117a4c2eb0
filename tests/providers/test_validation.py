import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import override_settings

from providers import services
from providers.models import Provider, ProviderFallback
from tests.support.engines import SCRIPTED_ENGINE
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db


def errors_of(**fields) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        services.provider_create(**fields)
    assert not Provider.objects.filter(name=fields.get("name")).exists()
    return caught.value.message_dict


def test_a_valid_custom_provider_is_created():
    provider = services.provider_create(
        name="scripted",
        kind="custom",
        model="m",
        engine_path=SCRIPTED_ENGINE,
    )
    assert provider.pk is not None
    assert provider.adapter == Provider.Adapter.AUTO


def test_unknown_kind():
    errors = errors_of(name="p", kind="llamacpp", model="m")
    assert "kind" in errors


def test_mlx_model_directory_must_exist(tmp_path):
    errors = errors_of(name="p", kind="mlx", model=str(tmp_path / "missing"))
    assert "does not exist" in errors["model"][0]


def test_mlx_model_directory_must_be_a_model(tmp_path):
    errors = errors_of(name="p", kind="mlx", model=str(tmp_path))
    assert "no config.json" in errors["model"][0]


def test_mlx_relative_paths_live_under_var_models(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "mine" / "config.json").write_text("{}")
    provider = services.provider_create(name="p", kind="mlx", model="mine")
    assert provider.model_path() == tmp_path / "models" / "mine"


def test_openai_needs_a_base_url():
    errors = errors_of(name="p", kind="openai", model="gpt")
    assert set(errors) == {"base_url"}


def test_openai_key_variable_must_be_set(monkeypatch):
    monkeypatch.delenv("DSPY_TOOLKIT_PROVIDER_KEY_PROVIDERS_TEST", raising=False)
    errors = errors_of(
        name="p",
        kind="openai",
        model="gpt",
        base_url="http://127.0.0.1:9/v1",
        api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_PROVIDERS_TEST",
    )
    assert errors["api_key_env"] == [
        "The environment variable 'DSPY_TOOLKIT_PROVIDER_KEY_PROVIDERS_TEST' is not set in this "
        "process."
    ]


@pytest.mark.parametrize("name", ["DATABASE_URL", "DJANGO_SECRET_KEY", "REDIS_URL"])
def test_the_toolkit_s_own_variables_are_never_key_variables(name, monkeypatch):
    monkeypatch.setenv(name, "server-side-value")
    for kind in ("openai", "custom"):
        errors = errors_of(
            name="p",
            kind=kind,
            model="gpt",
            base_url="http://x/v1",
            engine_path=SCRIPTED_ENGINE,
            api_key_env=name,
        )
        assert errors["api_key_env"] == [
            f"{name!r} is one of the toolkit's own settings, never an API key variable: its "
            "value would be sent to the provider. Put the key in a variable of its own, e.g. "
            "DSPY_TOOLKIT_PROVIDER_KEY_OPENAI."
        ]


@override_settings(PROVIDERS_KEY_ENV_PATTERN=".*", PROVIDERS_KEY_ENV_ALLOWED=["DATABASE_URL"])
def test_no_setting_lets_a_toolkit_variable_through(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@h/db")
    errors = errors_of(
        name="p", kind="openai", model="gpt", base_url="http://x/v1", api_key_env="DATABASE_URL"
    )
    assert "one of the toolkit's own settings" in errors["api_key_env"][0]


def test_key_variables_must_match_the_configured_pattern(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "a-key")
    errors = errors_of(
        name="p", kind="openai", model="gpt", base_url="http://x/v1", api_key_env="OPENAI_API_KEY"
    )
    assert errors["api_key_env"] == [
        "API key variables must match ^DSPY_TOOLKIT_PROVIDER_KEY_[A-Z0-9_]+$ (the "
        "PROVIDERS_KEY_ENV_PATTERN setting) or be listed in PROVIDERS_KEY_ENV_ALLOWED; "
        "'OPENAI_API_KEY' is neither."
    ]
    with override_settings(PROVIDERS_KEY_ENV_ALLOWED=["OPENAI_API_KEY"]):
        provider = services.provider_create(
            name="p",
            kind="openai",
            model="gpt",
            base_url="http://x/v1",
            api_key_env="OPENAI_API_KEY",
        )
    assert provider.api_key_env == "OPENAI_API_KEY"
    with override_settings(PROVIDERS_KEY_ENV_PATTERN=r"^OPENAI_[A-Z_]+$"):
        provider.full_clean()


def test_openai_key_variable_is_a_name_not_a_value():
    errors = errors_of(
        name="p", kind="openai", model="gpt", base_url="http://x/v1", api_key_env="sk-live 123"
    )
    assert "NAME of an environment variable" in errors["api_key_env"][0]


def test_openai_with_its_key_set(monkeypatch):
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_PROVIDERS_TEST", "secret-value")
    provider = services.provider_create(
        name="p",
        kind="openai",
        model="gpt",
        base_url="http://x/v1",
        api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_PROVIDERS_TEST",
    )
    assert provider.api_key_env == "DSPY_TOOLKIT_PROVIDER_KEY_PROVIDERS_TEST"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "needs the dotted path"),
        ("nowhere.at_all.Engine", "cannot be imported"),
        ("tests.support.engines.Missing", "cannot be imported"),
        ("tests.support.engines.NOT_A_CLASS", "is not a class"),
        ("tests.support.engines.NotAnEngine", "has no stream() method; it has no close() method"),
        ("tests.support.engines.NoConfigEngine", "EngineClass(config=EngineConfig(...))"),
    ],
)
def test_custom_engine_path_must_follow_the_contract(path, message):
    errors = errors_of(name="p", kind="custom", model="m", engine_path=path)
    assert message in errors["engine_path"][0]


def test_reserved_name():
    errors = errors_of(name="hardware", kind="custom", model="m", engine_path="x.Y")
    assert "reserved" in errors["name"][0]


def test_invalid_ranges():
    errors = errors_of(
        name="p",
        kind="custom",
        model="m",
        engine_path=SCRIPTED_ENGINE,
        temperature=3.0,
        top_p=1.5,
        max_tokens=0,
        timeout_s=0,
    )
    assert {"temperature", "top_p", "max_tokens", "timeout_s"} <= set(errors)


def test_fallbacks_are_stored_in_order():
    first, second = ProviderFactory(), ProviderFactory()
    provider = services.provider_create(
        name="main",
        kind="custom",
        model="m",
        engine_path=SCRIPTED_ENGINE,
        fallbacks=[second, first],
    )
    links = ProviderFallback.objects.filter(provider=provider).order_by("position")
    assert [(link.fallback, link.position) for link in links] == [(second, 0), (first, 1)]


def test_a_provider_cannot_fall_back_to_itself():
    provider = ProviderFactory()
    with pytest.raises(ValidationError) as caught:
        services.provider_set_fallbacks(provider=provider, fallbacks=[provider])
    assert caught.value.message_dict["fallbacks"] == [
        f"{provider.name!r} cannot fall back to itself."
    ]
    assert not ProviderFallback.objects.exists()


def test_duplicate_fallbacks_are_refused():
    provider, other = ProviderFactory(), ProviderFactory()
    with pytest.raises(ValidationError) as caught:
        services.provider_set_fallbacks(provider=provider, fallbacks=[other, other])
    assert "appears twice" in caught.value.message_dict["fallbacks"][0]


def test_two_provider_cycle_is_refused():
    a, b = ProviderFactory(name="a"), ProviderFactory(name="b")
    services.provider_set_fallbacks(provider=a, fallbacks=[b])
    with pytest.raises(ValidationError) as caught:
        services.provider_set_fallbacks(provider=b, fallbacks=[a])
    assert caught.value.message_dict["fallbacks"] == [
        "Falling back to 'a' makes a cycle: b -> a -> b."
    ]
    assert list(ProviderFallback.objects.filter(provider=b)) == []


def test_longer_cycle_is_refused_and_update_changes_nothing():
    a, b, c = (ProviderFactory(name=name) for name in "abc")
    services.provider_set_fallbacks(provider=a, fallbacks=[b])
    services.provider_set_fallbacks(provider=b, fallbacks=[c])
    with pytest.raises(ValidationError) as caught:
        services.provider_update(provider=c, data={"max_tokens": 99}, fallbacks=[a])
    assert caught.value.message_dict["fallbacks"] == [
        "Falling back to 'a' makes a cycle: c -> a -> b -> c."
    ]
    c.refresh_from_db()
    assert c.max_tokens == 32


def test_shared_fallbacks_are_not_a_cycle():
    a, b, c = (ProviderFactory(name=name) for name in "abc")
    services.provider_set_fallbacks(provider=a, fallbacks=[b, c])
    services.provider_set_fallbacks(provider=b, fallbacks=[c])
    assert [link.fallback for link in a.fallback_links.order_by("position")] == [b, c]


def test_database_refuses_self_fallback_and_duplicates():
    # Rows written straight to the table, past the service: the constraints under test are
    # what stops a write that skips the service's checks.
    a, b, c = ProviderFactory(), ProviderFactory(), ProviderFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        ProviderFallback.objects.create(provider=a, fallback=a, position=0)
    ProviderFallback.objects.create(provider=a, fallback=b, position=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        ProviderFallback.objects.create(provider=a, fallback=c, position=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        ProviderFallback.objects.create(provider=a, fallback=b, position=1)


def test_database_refuses_an_unknown_kind():
    # Straight to the table, past the service, like the test above.
    with pytest.raises(IntegrityError), transaction.atomic():
        Provider.objects.create(name="raw", kind="other", model="m")


def test_ensure_default_is_idempotent(tiny_model_dir):
    first = services.provider_ensure_default(model_path=tiny_model_dir)
    second = services.provider_ensure_default(model_path=tiny_model_dir)
    assert first.pk == second.pk
    assert (second.name, second.kind, second.model) == ("local-default", "mlx", str(tiny_model_dir))


@pytest.mark.parametrize("url", ["ftp://host/v1", "not a url", "http://", "http://host:port/v1"])
def test_openai_base_url_must_be_http(url):
    errors = errors_of(name="p", kind="openai", model="gpt", base_url=url)
    assert "http:// or https:// URL" in errors["base_url"][0]


def test_openai_base_url_may_be_a_single_label_host():
    provider = services.provider_create(
        name="p", kind="openai", model="gpt", base_url="http://mlx-server:8080/v1"
    )
    assert provider.base_url == "http://mlx-server:8080/v1"
