import pytest
from drf_spectacular.generators import SchemaGenerator

from providers.models import Provider, ProviderFallback
from tests.support.engines import SCRIPTED_ENGINE
from tests.support.errors import api_error, error_messages
from tests.support.factories import ProviderFactory, SignatureVersionFactory

pytestmark = pytest.mark.django_db

SECRET = "sk-test-very-secret-value-123"


def custom_payload(**overrides):
    return {
        "name": "new",
        "kind": "custom",
        "model": "m",
        "engine_path": SCRIPTED_ENGINE,
    } | overrides


def test_reading_needs_authentication(client):
    assert client.get("/api/v1/providers/").status_code in (401, 403)


def test_api_key_clients_can_neither_read_the_configuration_nor_write(api_client):
    ProviderFactory(name="one")
    assert api_client.get("/api/v1/providers/").status_code == 403
    response = api_client.post("/api/v1/providers/", custom_payload(), format="json")
    assert response.status_code == 403
    assert not Provider.objects.filter(name="new").exists()


def test_writes_need_the_model_permissions(client, viewer):
    client.force_login(viewer)
    response = client.post("/api/v1/providers/", custom_payload(), content_type="application/json")
    assert response.status_code == 403


def test_create_read_update_delete(operator_client):
    fallback = ProviderFactory(name="spare")
    response = operator_client.post(
        "/api/v1/providers/",
        custom_payload(fallbacks=["spare"], max_tokens=40),
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["fallbacks"] == ["spare"]
    assert body["max_tokens"] == 40
    assert body["api_key_configured"] is False

    response = operator_client.get("/api/v1/providers/new/")
    assert response.status_code == 200
    assert response.json()["engine_path"] == SCRIPTED_ENGINE

    other = ProviderFactory(name="other")
    response = operator_client.patch(
        "/api/v1/providers/new/",
        {"fallbacks": ["other", "spare"], "enabled": False},
        content_type="application/json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["fallbacks"] == ["other", "spare"]
    links = ProviderFallback.objects.filter(provider__name="new").order_by("position")
    assert [link.fallback for link in links] == [other, fallback]

    assert operator_client.delete("/api/v1/providers/new/").status_code == 204
    assert not Provider.objects.filter(name="new").exists()
    assert Provider.objects.filter(name="spare").exists()


def test_unknown_provider_is_404(operator_client):
    assert operator_client.get("/api/v1/providers/nope/").status_code == 404


def test_the_api_key_itself_never_appears(operator_client, monkeypatch):
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_PROVIDERS_TEST", SECRET)
    response = operator_client.post(
        "/api/v1/providers/",
        {
            "name": "remote",
            "kind": "openai",
            "model": "gpt",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": "DSPY_TOOLKIT_PROVIDER_KEY_PROVIDERS_TEST",
        },
        content_type="application/json",
    )
    assert response.status_code == 201
    assert SECRET not in response.content.decode()
    listing = operator_client.get("/api/v1/providers/")
    detail = operator_client.get("/api/v1/providers/remote/")
    for page in (listing, detail):
        assert SECRET not in page.content.decode()
    assert detail.json()["api_key_env"] == "DSPY_TOOLKIT_PROVIDER_KEY_PROVIDERS_TEST"
    assert detail.json()["api_key_configured"] is True
    stored = Provider.objects.values_list(*[f.attname for f in Provider._meta.concrete_fields])
    assert SECRET not in str(list(stored))


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        (custom_payload(kind="llamacpp"), "kind", "is not a valid choice"),
        (custom_payload(kind="mlx", model="/no/such/dir"), "model", "does not exist"),
        (custom_payload(kind="openai", engine_path=""), "base_url", "needs the base URL"),
        (
            custom_payload(
                kind="openai",
                base_url="http://h/v1",
                api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_UNSET_XYZ",
            ),
            "api_key_env",
            "is not set",
        ),
        (custom_payload(engine_path="no.such.Engine"), "engine_path", "cannot be imported"),
        (custom_payload(fallbacks=["ghost"]), "fallbacks", "Unknown providers: ghost"),
        (custom_payload(temperature=5), "temperature", "less than or equal to 2"),
        (custom_payload(name="hardware"), "name", "reserved"),
    ],
)
def test_validation_errors_are_field_level_400s(operator_client, payload, field, message):
    response = operator_client.post("/api/v1/providers/", payload, content_type="application/json")
    api_error(response, 400)
    assert message in " ".join(error_messages(response, field))
    assert not Provider.objects.filter(name=payload["name"]).exists()


def test_self_fallback_and_cycles_are_400s(operator_client):
    ProviderFactory(name="a")
    ProviderFactory(name="b")
    response = operator_client.patch(
        "/api/v1/providers/a/", {"fallbacks": ["a"]}, content_type="application/json"
    )
    api_error(response, 400)
    assert error_messages(response, "fallbacks") == ["'a' cannot fall back to itself."]
    assert (
        operator_client.patch(
            "/api/v1/providers/a/", {"fallbacks": ["b"]}, content_type="application/json"
        ).status_code
        == 200
    )
    response = operator_client.patch(
        "/api/v1/providers/b/",
        {"fallbacks": ["a"], "max_tokens": 7},
        content_type="application/json",
    )
    api_error(response, 400)
    assert error_messages(response, "fallbacks") == [
        "Falling back to 'a' makes a cycle: b -> a -> b."
    ]
    assert Provider.objects.get(name="b").max_tokens == 32


def test_hardware_report(operator_client):
    response = operator_client.get("/api/v1/providers/hardware/")
    assert response.status_code == 200
    report = response.json()
    assert report["mlx_backend"] in {"cpu", "gpu", "metal", "cuda"}
    assert report["cpu_count"] >= 1


def test_hardware_report_is_read_only(operator_client):
    assert operator_client.post("/api/v1/providers/hardware/").status_code == 405


def test_schema_documents_the_provider_routes_without_warnings(capsys):
    generator = SchemaGenerator()
    schema = generator.get_schema(request=None, public=True)
    problems = capsys.readouterr().err
    # drf-spectacular reports problems on stderr, naming the view. The project-wide
    # authentication classes (the executions app's) are documented by that app.
    assert not [
        line
        for line in problems.splitlines()
        if ("Provider" in line or "Hardware" in line) and "authenticator" not in line
    ]
    assert {
        "/api/v1/providers/",
        "/api/v1/providers/{name}/",
        "/api/v1/providers/hardware/",
    } <= set(schema["paths"])
    provider_schema = str(schema["components"]["schemas"]["Provider"])
    assert "api_key_configured" in provider_schema
    assert "api_key'" not in provider_schema


def test_superuser_can_write(admin_client):
    response = admin_client.post(
        "/api/v1/providers/", custom_payload(), content_type="application/json"
    )
    assert response.status_code == 201


def test_a_provider_with_recorded_executions_cannot_be_deleted(operator_client):
    from executions.services.create import execution_create

    ProviderFactory(name="busy")
    SignatureVersionFactory(signature__name="qa")
    execution_create(signature="qa", inputs={"question": "q"}, provider="busy")
    response = operator_client.delete("/api/v1/providers/busy/")
    assert response.status_code == 409
    assert response.json()["code"] == "provider_in_use"
    assert Provider.objects.filter(name="busy").exists()


def test_list_filters_by_kind_and_enabled(operator_client):
    ProviderFactory(name="on")
    ProviderFactory(name="off", enabled=False)
    ProviderFactory(name="remote", kind="openai", base_url="http://h/v1")

    def names(query: str) -> list[str]:
        response = operator_client.get(f"/api/v1/providers/?{query}")
        return [item["name"] for item in response.json()["results"]]

    assert names("enabled=false") == ["off"]
    assert names("kind=openai") == ["remote"]
    assert names("kind=custom&enabled=true") == ["on"]


def test_api_keys_see_only_the_providers_they_may_use(api_client, db):
    """Configuration (endpoints, key variables) and the hardware report are for staff; a client
    learns the names and kinds of the enabled providers."""
    ProviderFactory(name="visible")
    ProviderFactory(name="off", enabled=False)
    for path in ("/api/v1/providers/", "/api/v1/providers/visible/", "/api/v1/providers/hardware/"):
        assert api_error(api_client.get(path), 403)["code"] == "permission_denied", path
    available = api_client.get("/api/v1/providers/available/")
    assert available.status_code == 200
    assert available.json() == [{"name": "visible", "kind": "custom"}]


def test_available_is_a_reserved_provider_name(operator_client):
    response = operator_client.post(
        "/api/v1/providers/", custom_payload(name="available"), content_type="application/json"
    )
    assert "reserved" in " ".join(error_messages(response, "name"))
