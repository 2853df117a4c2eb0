"""Every API endpoint answers every kind of bad request in the one error shape.

The table below lists each operation of the API with the bad requests it can get; a test
checks that the table covers every operation in the OpenAPI schema, so a new endpoint cannot
slip past the contract.
"""

import uuid

import pytest
from django.contrib.auth import get_user_model
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from evaluations.models import EvaluationRun, OptimizationRun
from executions.models import Execution
from registry.services.aliases import alias_set
from registry.services.datasets import dataset_import
from registry.services.signatures import signature_create
from registry.services.versions import signature_version_create
from tests.support.engines import ECHO_ENGINE
from tests.support.factories import ProviderFactory
from tests.support.specs import QA_SPEC

MISSING = "does-not-exist"

# path template -> {method: {kind of bad request: (body or None, expected status)}}
# Path parameters are filled with existing objects, or with unknown ones for "unknown".
VALID_ALIAS_MOVE = {"version": 1}
VALID_PROMOTION = {"version": 1, "dataset": "starter", "split": "dev", "metric": "exact_match"}
# Evaluation and optimization runs share this id in the `world`.
RUN_ID = 7
OPERATIONS = {
    "/api/v1/signatures/": {
        "get": {},
        "post": {
            "missing_field": ({}, 400),
            "wrong_type": ({"name": 5}, 400),
            "conflict": ({"name": "qa"}, 409),
        },
    },
    "/api/v1/signatures/{name}/": {
        "get": {},
        "patch": {"wrong_type": ({"tags": "not-a-list"}, 400)},
    },
    "/api/v1/signatures/{name}/versions/": {
        "get": {},
        "post": {"missing_field": ({}, 400), "wrong_type": ({"input_fields": "x"}, 400)},
    },
    "/api/v1/signatures/{name}/versions/{number}/": {"get": {}},
    "/api/v1/signatures/{name}/resolve/": {"get": {}},
    "/api/v1/signatures/{name}/aliases/": {"get": {}},
    "/api/v1/signatures/{name}/aliases/{alias}/": {
        "get": {},
        "put": {
            "missing_field": ({}, 400),
            "wrong_type": ({"version": "one"}, 400),
            "conflict": ({"version": 1, "expected_version": 7}, 409),
        },
        "delete": {},
    },
    "/api/v1/providers/": {
        "get": {},
        "post": {"missing_field": ({"name": "p"}, 400), "wrong_type": ({"name": []}, 400)},
    },
    "/api/v1/providers/hardware/": {"get": {}},
    "/api/v1/providers/available/": {"get": {}},
    "/api/v1/providers/{name}/": {
        "get": {},
        "put": {"missing_field": ({}, 400), "wrong_type": ({"max_tokens": "many"}, 400)},
        "patch": {"wrong_type": ({"temperature": "hot"}, 400)},
        "delete": {"conflict": (None, 409)},
    },
    "/api/v1/providers/{name}/health": {"get": {}},
    "/api/v1/dspy/execute": {
        "post": {
            "missing_field": ({"signature": "qa"}, 400),
            "wrong_type": ({"signature": "qa", "inputs": {"question": 3}}, 400),
        }
    },
    "/api/v1/dspy/execute/batch": {
        "post": {"missing_field": ({}, 400), "wrong_type": ({"items": "x"}, 400)}
    },
    "/api/v1/executions": {"get": {}},
    "/api/v1/executions/{id}": {"get": {}},
    "/api/v1/executions/{id}/cancel": {"post": {"conflict": (None, 409)}},
    "/api/v1/usage": {"get": {"wrong_type": ({"window": "year"}, 400)}},
    "/api/v1/executions/{id}/rerun": {
        "post": {"wrong_type": ({"version": 0}, 400), "unknown_field": ({"providr": "x"}, 400)}
    },
    "/api/v1/openai/chat/completions": {
        "post": {
            "missing_field": ({"model": "echo"}, 400),
            "wrong_type": ({"model": "echo", "messages": "hello"}, 400),
            "unknown_model": (
                {"model": MISSING, "messages": [{"role": "user", "content": "q"}]},
                404,
            ),
        }
    },
    "/api/v1/openai/models": {"get": {}},
    "/api/v1/signatures/{name}/datasets/": {
        "get": {},
        "post": {
            "missing_field": ({}, 400),
            "wrong_type": ({"name": "d", "examples": "rows"}, 400),
            "bad_row": ({"name": "d", "examples": [{"question": 3, "answer": "a"}]}, 400),
            "conflict": ({"name": "starter", "examples": [{"question": "q", "answer": "a"}]}, 409),
        },
    },
    "/api/v1/signatures/{name}/datasets/{dataset}/": {
        "get": {},
        # An evaluation run refers to it.
        "delete": {"conflict": (None, 409)},
    },
    "/api/v1/signatures/{name}/datasets/{dataset}/examples/": {"get": {}},
    "/api/v1/signatures/{name}/datasets/{dataset}/export/": {"get": {}},
    "/api/v1/signatures/{name}/aliases/{alias}/promote/": {
        "post": {
            "missing_field": ({}, 400),
            "wrong_type": ({**VALID_PROMOTION, "version": "two"}, 400),
            # Version 1 is production already.
            "conflict": (VALID_PROMOTION, 409),
        }
    },
    "/api/v1/evaluations/": {
        "get": {},
        "post": {"missing_field": ({}, 400), "wrong_type": ({"signature": 5}, 400)},
    },
    "/api/v1/evaluations/{run_id}/": {"get": {}},
    "/api/v1/evaluations/{run_id}/cancel/": {"post": {}},
    "/api/v1/evaluations/{run_id}/results/": {"get": {}},
    "/api/v1/evaluations/compare/": {"get": {"missing_field": ({}, 400)}},
    "/api/v1/optimizations/": {
        "get": {},
        "post": {"missing_field": ({}, 400), "wrong_type": ({"signature": 5}, 400)},
    },
    "/api/v1/optimizations/{run_id}/": {"get": {}},
    "/api/v1/optimizations/{run_id}/cancel/": {"post": {}},
    "/api/v1/optimizations/{run_id}/promote/": {
        # The run has no result yet.
        "post": {"wrong_type": ({"force": "maybe"}, 400), "conflict": ({}, 409)}
    },
    "/api/v1/optimizations/optimizers/": {"get": {}},
}
# Bodies valid enough to get past validation to the lookup that answers 404.
LOOKUP_BODIES = {
    ("/api/v1/signatures/{name}/aliases/{alias}/", "put"): VALID_ALIAS_MOVE,
    ("/api/v1/signatures/{name}/aliases/{alias}/promote/", "post"): VALID_PROMOTION,
}
BODY_METHODS = ("post", "put", "patch")
# Writes that take no body (and so never parse one).
BODYLESS = {
    ("/api/v1/executions/{id}/cancel", "post"),
    ("/api/v1/evaluations/{run_id}/cancel/", "post"),
    ("/api/v1/optimizations/{run_id}/cancel/", "post"),
}
ALL_METHODS = ("get", "post", "put", "patch", "delete")


def assert_error_shape(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"code", "message", "errors"}, body
    assert isinstance(body["code"], str) and body["code"], body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["errors"], dict), body
    for messages in body["errors"].values():
        assert isinstance(messages, list | dict), body
    return body


@pytest.fixture
def world(db):
    """A signature with a production alias, a provider that answers, a finished execution."""
    signature = signature_create(name="qa")
    version = signature_version_create(signature=signature, spec=QA_SPEC).version
    alias_set(signature=signature, name="production", version=version)
    provider = ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    execution = Execution.objects.create(
        signature_version=version,
        requested_provider=provider,
        inputs={"question": "q"},
        status=Execution.Status.SUCCEEDED,
        finished_at="2026-01-01T00:00:00Z",
    )
    dataset = dataset_import(
        signature=signature,
        name="starter",
        rows=[{"split": "dev", "question": "What is 2 + 2?", "answer": "4"}],
    )
    common = {"dataset": dataset, "dataset_hash": dataset.content_hash, "metric": "exact_match"}
    EvaluationRun.objects.create(
        id=RUN_ID, signature_version=version, split="dev", provider=provider, **common
    )
    OptimizationRun.objects.create(
        id=RUN_ID,
        signature_version=version,
        train_split="train",
        dev_split="dev",
        student_provider=provider,
        optimizer="labeled_few_shot",
        **common,
    )
    return {
        "name": "qa",
        "number": 1,
        "alias": "production",
        "id": str(execution.id),
        "dataset": "starter",
        "run_id": RUN_ID,
    }


@pytest.fixture
def superuser_api_client(admin_user) -> APIClient:
    client = APIClient()
    client.force_login(admin_user)
    return client


def _path(template: str, values: dict, *, unknown: bool = False) -> str:
    filled = {
        "name": "echo" if template.startswith("/api/v1/providers/") else values["name"],
        "number": 99 if unknown else values["number"],
        "alias": values["alias"],
        "id": str(uuid.uuid4()) if unknown else values["id"],
        "dataset": values["dataset"],
        "run_id": 999_999 if unknown else values["run_id"],
    }
    if unknown:
        filled["name"] = MISSING
    path = template
    for key, value in filled.items():
        path = path.replace("{" + key + "}", str(value))
    return path


def _cases():
    for template, methods in OPERATIONS.items():
        for method, cases in methods.items():
            yield pytest.param(template, method, cases, id=f"{method.upper()} {template}")


def test_the_table_covers_every_operation_of_the_schema():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    documented = {
        (path, method)
        for path, item in schema["paths"].items()
        if path.startswith("/api/")
        for method in item
    }
    listed = {(path, method) for path, methods in OPERATIONS.items() for method in methods}
    assert documented == listed


@pytest.mark.parametrize(("template", "method", "cases"), list(_cases()))
def test_no_credentials_is_a_401_with_the_scheme(db, world, template, method, cases):
    response = getattr(APIClient(), method)(_path(template, world))
    assert_error_shape(response, 401)
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize(("template", "method", "cases"), list(_cases()))
def test_every_bad_request_in_one_shape(superuser_api_client, world, template, method, cases):
    client = superuser_api_client
    call = getattr(client, method)
    # A method the operation does not have.
    allowed = set(OPERATIONS[template])
    wrong = next(other for other in ALL_METHODS if other not in allowed)
    assert_error_shape(getattr(client, wrong)(_path(template, world)), 405)
    if "{" in template:
        lookup_body = LOOKUP_BODIES.get((template, method), {})
        body = assert_error_shape(call(_path(template, world, unknown=True), lookup_body), 404)
        assert body["code"].endswith("not_found"), body
    if method in BODY_METHODS and (template, method) not in BODYLESS:
        path = _path(template, world)
        malformed = call(path, data="{not json", content_type="application/json")
        assert assert_error_shape(malformed, 400)["code"] == "parse_error"
        form = call(path, data="a=1", content_type="application/x-www-form-urlencoded")
        assert assert_error_shape(form, 415)["code"] == "unsupported_media_type"
    for kind, (data, status) in cases.items():
        body = assert_error_shape(call(_path(template, world), data), status)
        if kind in ("missing_field", "wrong_type"):
            assert body["errors"], (kind, body)


def test_the_body_limit_holds_for_every_write(superuser_api_client, world, settings):
    settings.API_MAX_BODY_BYTES = 100
    big = {"description": "x" * 200}
    for template, methods in OPERATIONS.items():
        for method in methods:
            if method in BODY_METHODS:
                response = getattr(superuser_api_client, method)(_path(template, world), big)
                assert assert_error_shape(response, 413)["code"] == "payload_too_large"


def test_the_rate_limit_is_a_429_with_retry_after(superuser_api_client, world, settings):
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": {"api_key": "1/min", "user": "1/min"}
    }
    from django.core.cache import cache

    cache.clear()
    superuser_api_client.get("/api/v1/signatures/")
    response = superuser_api_client.get("/api/v1/signatures/")
    assert assert_error_shape(response, 429)["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


def test_a_permission_refusal_is_a_403(db, world):
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    client = APIClient()
    client.force_login(user)
    response = client.post("/api/v1/providers/", {"name": "x"})
    assert assert_error_shape(response, 403)["code"] == "permission_denied"


def test_unknown_api_urls_answer_json_even_under_debug(client, settings):
    settings.DEBUG = True
    response = client.get("/api/v1/nothing-here")
    assert assert_error_shape(response, 404)["code"] == "not_found"
    assert b"<html" not in response.content.lower()


def test_deep_json_is_a_400_not_a_500(superuser_api_client, world):
    deep = "[" * 100_000 + "]" * 100_000
    response = superuser_api_client.post(
        "/api/v1/dspy/execute", data=deep, content_type="application/json"
    )
    assert assert_error_shape(response, 400)["code"] == "parse_error"


def test_a_service_error_keeps_its_field_errors(superuser_api_client, world):
    response = superuser_api_client.post("/api/v1/signatures/", {"name": "qa"})
    body = assert_error_shape(response, 409)
    assert body["code"] == "signature_exists"
    assert body["errors"]["name"][0]["code"] == "invalid"
