"""Input that once reached a 500 is a clear 4xx in the one error shape, and stores nothing."""

import json

import pytest
from django.http import HttpResponseServerError
from django.test import RequestFactory
from rest_framework.test import APIClient

from core.api.middleware import ApiErrorsMiddleware
from executions.models import Execution
from registry.models import Signature
from registry.services.signatures import signature_create
from registry.services.versions import signature_version_create
from tests.support.engines import ECHO_ENGINE
from tests.support.errors import api_error
from tests.support.factories import ProviderFactory
from tests.support.specs import QA_SPEC

EXECUTE = "/api/v1/dspy/execute"
BATCH = "/api/v1/dspy/execute/batch"


@pytest.fixture
def qa(db):
    ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    return signature_version_create(signature=signature_create(name="qa"), spec=QA_SPEC).version


@pytest.fixture
def superuser_api_client(admin_user) -> APIClient:
    client = APIClient()
    client.force_login(admin_user)
    return client


def _raw(client, path: str, body: str, content_type: str = "application/json"):
    return client.post(path, data=body, content_type=content_type)


@pytest.mark.parametrize("depth", [40, 1_000, 10_000])
@pytest.mark.parametrize("path", [EXECUTE, BATCH, "/api/v1/signatures/"])
def test_deeply_nested_json_is_refused_before_it_is_used(superuser_api_client, qa, path, depth):
    inner = "[" * depth + "]" * depth
    body = f'{{"signature": "qa", "inputs": {{"question": {inner}}}, "items": {inner}}}'
    assert api_error(_raw(superuser_api_client, path, body), 400)["code"] == "parse_error"
    assert not Execution.objects.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"signature": "qa", "inputs": {"question": "a\x00b"}},
        {"signature": "qa", "inputs": {"question": "a\ud800b"}},
        {"signature": "qa", "inputs": {"question": "q"}, "config": {"stop": ["\x00"]}},
        {"signature": "qa", "inputs": {"qu\x00estion": "q"}},
    ],
)
def test_text_postgresql_cannot_store_is_a_field_error(api_client, qa, payload):
    body = json.dumps(payload)  # \ud800 travels as the escape a client would send
    body_error = api_error(_raw(api_client, EXECUTE, body), 400)
    assert body_error["code"] == "invalid_request"
    assert "invalid_character" in json.dumps(body_error["errors"])
    assert not Execution.objects.exists()


@pytest.mark.parametrize(
    "query", ["offset=99999999999999999999", "limit=-1", "limit=0", "offset=x"]
)
def test_out_of_range_pagination_is_a_400(api_client, qa, query):
    assert api_error(api_client.get(f"/api/v1/executions?{query}"), 400)["code"] == (
        "invalid_request"
    )


@pytest.mark.parametrize("limit", ["100000", "99999999999999999999"])
def test_a_huge_limit_is_capped_not_refused(api_client, qa, limit):
    assert api_client.get(f"/api/v1/executions?limit={limit}").status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/v1/providers/%00/", "/api/v1/signatures/%00/", "/api/v1/executions/%00"]
)
def test_a_nul_in_the_path_is_a_404(superuser_api_client, qa, path):
    assert api_error(superuser_api_client.get(path), 404)["code"] == "not_found"


def test_a_nul_in_the_query_is_a_400(api_client, qa):
    response = api_client.get("/api/v1/executions?status=%00")
    assert api_error(response, 400)["code"] == "invalid_request"


@pytest.mark.parametrize("path", [EXECUTE, BATCH])
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("signature=qa&inputs=x", "application/x-www-form-urlencoded"),
        (
            '--b\r\nContent-Disposition: form-data; name="signature"\r\n\r\nqa\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
    ],
)
def test_only_json_bodies_are_read(superuser_api_client, qa, path, body, content_type):
    """Form and multipart bodies, also with a staff session, get a 415 and run nothing."""
    response = _raw(superuser_api_client, path, body, content_type)
    assert api_error(response, 415)["code"] == "unsupported_media_type"
    assert not Execution.objects.exists()


def test_a_body_over_djangos_upload_limit_is_a_json_413(superuser_api_client, qa, settings):
    settings.API_MAX_BODY_BYTES = 10 * 1024 * 1024
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = json.dumps({"name": "big", "description": "x" * 4096})
    response = _raw(superuser_api_client, "/api/v1/signatures/", body)
    assert response["Content-Type"].startswith("application/json")
    assert response.status_code in (400, 413)
    assert not Signature.objects.filter(name="big").exists()


def test_options_is_a_405_on_every_route(superuser_api_client, qa):
    for path in ("/api/v1/signatures/qa/aliases/production/", EXECUTE, "/api/v1/providers/"):
        assert api_error(superuser_api_client.options(path), 405)["code"] == "method_not_allowed"


@pytest.mark.parametrize("name", ["self", "instance"])
def test_input_names_that_break_dspy_are_refused(superuser_api_client, db, name):
    spec = QA_SPEC | {"input_fields": [{"name": name, "type": "str"}]}
    response = superuser_api_client.post("/api/v1/signatures/", {"name": "probe", "version": spec})
    assert api_error(response, 400)["code"] == "invalid_spec"
    assert not Signature.objects.filter(name="probe").exists()


def test_the_api_never_serves_an_html_error_page(settings):
    """Whatever Django renders for an error under /api/ (its debug page included) becomes the
    error shape; pages elsewhere (the admin) keep Django's own."""
    settings.DEBUG = True
    middleware = ApiErrorsMiddleware(lambda request: HttpResponseServerError("<html>debug</html>"))
    api = middleware(RequestFactory().get("/api/v1/dspy/execute"))
    assert api.status_code == 500
    assert json.loads(api.content)["code"] == "internal_error"
    admin = middleware(RequestFactory().get("/admin/"))
    assert admin.content == b"<html>debug</html>"


def test_an_mlx_model_name_the_file_system_refuses_is_a_field_error(superuser_api_client, db):
    """A path component over 255 bytes makes the file system raise (ENAMETOOLONG) where the
    directories above it exist: a field error, whichever way the path fails."""
    for model in ("m" * 300, "/tmp/" + "m" * 300):
        response = superuser_api_client.post(
            "/api/v1/providers/", {"name": "long", "kind": "mlx", "model": model}
        )
        assert api_error(response, 400)["errors"]["model"]
    assert response.json()["errors"]["model"][0]["message"].endswith("File name too long.")
