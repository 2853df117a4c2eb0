"""The OpenAPI schema tells the truth about the API, and the interactive docs work offline.

The schema is valid; every operation has a summary, typed bodies and its errors in the one
error component; every request example fits its schema and is accepted by the server; and
schemathesis, generating requests from the schema, finds no server error and no response the
schema does not describe.
"""

import copy
import re
from functools import cache
from typing import Any

import hypothesis
import jsonschema
import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import connection
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from evaluations.models import OptimizationRun, RunStatus
from executions.models import Execution
from providers.services import provider_create
from registry.models import VersionScore
from registry.services.aliases import alias_set
from registry.services.datasets import dataset_import
from registry.services.signatures import signature_create
from registry.services.versions import signature_version_create
from tests.support.engines import ECHO_ENGINE
from tests.support.factories import CLOSED_PORT_URL
from tests.support.service_processes import report_process
from tests.support.specs import QA_SPEC

ERROR_REF = "#/components/schemas/Error"
DOCUMENTED_EXECUTION_ID = "3f1c9a52-7d4e-4b8a-9c1e-2a6b5d8f0e47"
METHODS = ("get", "put", "post", "patch", "delete")


@cache
def _generated() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def api_schema() -> dict[str, Any]:
    """The schema as `/api/schema/` serves it with the test settings (a fresh copy)."""
    return copy.deepcopy(_generated())


def _operations(schema: dict[str, Any]):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _resolve(schema: dict[str, Any], node: Any) -> Any:
    """`node` with every `$ref` inlined and OpenAPI 3.0's `nullable` turned into JSON Schema."""
    if isinstance(node, list):
        return [_resolve(schema, item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        return _resolve(schema, schema["components"]["schemas"][name])
    resolved = {key: _resolve(schema, value) for key, value in node.items()}
    if resolved.pop("nullable", False):
        return {"anyOf": [resolved, {"type": "null"}]}
    return resolved


def _validator(schema: dict[str, Any], node: dict[str, Any]) -> jsonschema.Draft4Validator:
    # Draft 4 reads `exclusiveMinimum: true` as OpenAPI 3.0 does.
    return jsonschema.Draft4Validator(
        _resolve(schema, node), format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )


def _request_examples(schema: dict[str, Any]):
    for path, method, operation in _operations(schema):
        content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        for name, example in content.get("examples", {}).items():
            yield pytest.param(path, method, example["value"], id=f"{method.upper()} {path} {name}")


def _path(schema: dict[str, Any], path: str, method: str) -> str:
    """The path with each parameter set to its documented example."""
    for parameter in schema["paths"][path][method].get("parameters", []):
        if parameter["in"] == "path":
            value = next(iter(parameter["examples"].values()))["value"]
            path = path.replace("{" + parameter["name"] + "}", str(value))
    return path


# The schema -----------------------------------------------------------------------------------


def test_the_schema_is_valid_openapi_and_generates_without_warnings(tmp_path):
    validate_schema(api_schema())
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))


def test_every_operation_has_a_summary_and_its_errors_in_the_error_component():
    schema = api_schema()
    for path, method, operation in _operations(schema):
        label = f"{method.upper()} {path}"
        assert operation.get("summary"), label
        assert operation.get("description"), label
        for status, response in operation["responses"].items():
            if status.startswith("4"):
                body = response["content"]["application/json"]["schema"]
                assert body == {"$ref": ERROR_REF}, (label, status)
                assert response["description"], (label, status)
        if path.startswith("/api/"):
            assert {"401", "403", "429"} <= set(operation["responses"]), label


def test_every_body_is_typed_and_every_write_has_a_request_example():
    schema = api_schema()
    untyped = []

    def visit(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            return
        if not ({"type", "$ref", "oneOf", "anyOf", "allOf"} & set(node)):
            untyped.append(where)
        for name, child in node.get("properties", {}).items():
            visit(child, f"{where}.{name}")
        if "items" in node:
            visit(node["items"], f"{where}[]")
        for key in ("oneOf", "anyOf", "allOf"):
            for index, child in enumerate(node.get(key, [])):
                visit(child, f"{where}.{key}[{index}]")

    for name, component in schema["components"]["schemas"].items():
        visit(component, name)
    for path, method, operation in _operations(schema):
        label = f"{method.upper()} {path}"
        body = operation.get("requestBody")
        if body:
            content = body["content"]["application/json"]
            visit(content["schema"], f"{label} request")
            assert content.get("examples"), label
        for status, response in operation["responses"].items():
            if "content" in response:
                visit(response["content"]["application/json"]["schema"], f"{label} {status}")
    assert untyped == []


def test_bounds_are_the_ones_the_server_enforces_now(settings):
    settings.EXECUTIONS_MAX_TIMEOUT_S = 120.0
    settings.EXECUTIONS_MAX_TOKENS_LIMIT = 512
    settings.EXECUTIONS_BATCH_MAX_ITEMS = 4
    components = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]
    execute = components["ExecuteRequest"]["properties"]
    assert execute["timeout_s"]["maximum"] == 120.0
    assert execute["timeout_s"]["minimum"] == 0
    assert execute["timeout_s"]["exclusiveMinimum"] is True
    assert execute["inputs"]["type"] == "object"
    assert execute["config"]["type"] == "object"
    assert execute["config"]["properties"]["max_tokens"]["maximum"] == 512
    assert components["ExecuteBatchRequest"]["properties"]["items"]["maxItems"] == 4


def test_every_example_fits_its_schema():
    schema = api_schema()
    checked = 0
    for path, method, operation in _operations(schema):
        label = f"{method.upper()} {path}"
        content = operation.get("requestBody", {}).get("content", {}).get("application/json")
        bodies = [(content, "request")] if content else []
        for status, response in operation["responses"].items():
            if "content" in response:
                bodies.append((response["content"]["application/json"], status))
        for body, where in bodies:
            validator = _validator(schema, body["schema"])
            for name, example in body.get("examples", {}).items():
                errors = [error.message for error in validator.iter_errors(example["value"])]
                assert errors == [], (label, where, name)
                checked += 1
        for parameter in operation.get("parameters", []):
            validator = _validator(schema, parameter["schema"])
            for name, example in parameter.get("examples", {}).items():
                assert validator.is_valid(example["value"]), (label, parameter["name"], name)
    assert checked >= 20


def test_a_timeout_of_zero_is_outside_the_schema_as_the_server_refuses_it():
    schema = api_schema()
    validator = _validator(schema, {"$ref": "#/components/schemas/ExecuteRequest"})
    body = {"signature": "qa", "inputs": {"question": "q"}}
    assert validator.is_valid(body | {"timeout_s": 0.5})
    assert not validator.is_valid(body | {"timeout_s": 0})
    assert not validator.is_valid(body | {"inputs": "string"})
    assert not validator.is_valid(body | {"config": {"max_tokens": 10**6}})


# The examples, sent -------------------------------------------------------------------------


@pytest.fixture
def registry_and_providers(transactional_db):
    """What the documented examples name: the `qa` signature (versions 1 and 2, `production`
    at 1) and the providers `local-default` (answers), `remote-vllm` and the replicas
    `vllm-a`, `vllm-b`, `vllm-c` (never reached)."""
    signature = signature_create(name="qa", description="Questions.")
    first = signature_version_create(signature=signature, spec=QA_SPEC).version
    second = signature_version_create(
        signature=signature, spec=QA_SPEC | {"instructions": "Answer the question briefly."}
    ).version
    alias_set(signature=signature, name="production", version=first)
    # Its dataset `starter`, version 2 scoring above version 1 on its dev split, and the
    # optimization run 1 that produced version 2 (what the evaluation, optimization and
    # promotion examples name).
    dataset = dataset_import(
        signature=signature,
        name="starter",
        rows=[
            {"split": split, "question": f"What is {n} + {n}?", "answer": str(2 * n)}
            for n, split in enumerate(["train", "train", "dev", "dev"], start=1)
        ],
    )
    for version, score in ((first, 0.4), (second, 0.7)):
        VersionScore.objects.create(
            signature_version=version,
            dataset=dataset,
            dataset_hash=dataset.content_hash,
            split="dev",
            metric="exact_match",
            score=score,
            examples=2,
            source=VersionScore.Source.EVALUATION,
        )
    local = provider_create(
        name="local-default",
        kind="custom",
        model="echo",
        engine_path=ECHO_ENGINE,
        adapter="compact",
    )
    provider_create(
        name="remote-vllm",
        kind="openai",
        model="Qwen/Qwen2.5-7B-Instruct",
        base_url=CLOSED_PORT_URL,
        fallbacks=[local],
    )
    # The replicas the documented pool is made of.
    for replica in ("vllm-a", "vllm-b", "vllm-c"):
        provider_create(
            name=replica, kind="openai", model="Qwen/Qwen2.5-7B-Instruct", base_url=CLOSED_PORT_URL
        )
    OptimizationRun.objects.create(
        id=1,
        signature_version=first,
        dataset=dataset,
        dataset_hash=dataset.content_hash,
        train_split="train",
        dev_split="dev",
        metric="exact_match",
        student_provider=local,
        optimizer="bootstrap_few_shot",
        status=RunStatus.SUCCEEDED,
        result_version=second,
        baseline_score=0.4,
        best_score=0.7,
    )
    # Runs the examples create must not collide with the id given above.
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), [OptimizationRun]):
            cursor.execute(sql)
    # The execution the documented path examples name (its re-run example is sent).
    Execution.objects.create(
        id=DOCUMENTED_EXECUTION_ID,
        signature_version=first,
        requested_provider=local,
        inputs={"question": "What is the capital of France?"},
        status=Execution.Status.SUCCEEDED,
        finished_at="2026-01-05T10:00:00.610000Z",
    )


@pytest.fixture
def superuser(transactional_db):
    return get_user_model().objects.create_superuser("root", password="pw")


@pytest.mark.parametrize(("path", "method", "body"), list(_request_examples(api_schema())))
def test_every_request_example_is_accepted(registry_and_providers, superuser, path, method, body):
    # Committed for real, so a sync execution runs inline (the test settings run django-q2
    # tasks synchronously) and the example gets its answer.
    client = APIClient()
    client.force_login(superuser)
    response = getattr(client, method)(_path(api_schema(), path, method), body, format="json")
    assert 200 <= response.status_code < 300, response.content[:1000]
    if "dspy/execute" in path:
        body = response.json()
        for execution in (
            [item["execution"] for item in body["items"]] if "items" in body else [body]
        ):
            assert execution["status"] in {"queued", "succeeded"}, execution


# The interactive docs -----------------------------------------------------------------------

_URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_the_docs_pages_load_nothing_from_another_host(db, page):
    response = Client().get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert _URL.findall(html) == []
    assert "fonts.googleapis" not in html
    # The browser may fetch no image or font from elsewhere (ReDoc's bundle shows Redocly's
    # logo from its CDN otherwise).
    policy = response["Content-Security-Policy"]
    assert "img-src 'self' data: blob:" in policy and "font-src 'self' data:" in policy
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        if asset.startswith(f"{page}?script"):
            continue  # Swagger UI's start-up script, served by the docs view itself
        assert asset.startswith("/static/"), asset
        assert finders.find(asset.removeprefix("/static/")), asset


def test_redoc_uses_system_fonts():
    response = Client().get("/api/redoc/")
    settings_json = re.search(r"const redocSettings = (\{.*?\});", response.content.decode(), re.S)
    assert settings_json is not None
    families = re.findall(r'"fontFamily": "([^"]+)"', settings_json.group(1))
    assert len(families) == 3
    for family in families:
        assert "Montserrat" not in family
        assert family.endswith(("sans-serif", "monospace"))


# Schemathesis -------------------------------------------------------------------------------

# Deterministic (a fixed seed, derandomized), and under a minute for the whole API: per
# operation, its documented examples, the coverage phase's boundary and missing-field cases,
# and this many generated ones.
MAX_EXAMPLES = 10
# No 5xx, and every status, content type and body as the schema documents it.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CSRF_TOKEN = "x" * 32
schema = schemathesis.openapi.from_dict(
    api_schema(),
    config=SchemathesisConfig.from_dict(
        {
            "seed": 20260105,
            "generation": {"max-examples": MAX_EXAMPLES},
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)
schema.app = application


@pytest.fixture
def credentials(registry_and_providers, superuser, settings):
    """An API key for reads and a superuser session (with its CSRF pair) for writes: an API
    key may not write the registry or the providers."""
    # The service as it runs, its tasks cluster's workers reporting: readiness answers 200
    # (its documented 503 would count as a server error).
    report_process(cluster="default")
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": {"api_key": "100000/min", "user": "100000/min"}
    }
    _, key = APIKey.objects.create_key(name="schemathesis")
    browser = Client()
    browser.force_login(superuser)
    return {
        "read": {"headers": {"Authorization": f"Api-Key {key}"}},
        "write": {
            "headers": {"X-CSRFToken": CSRF_TOKEN},
            "cookies": {"sessionid": browser.cookies["sessionid"].value, "csrftoken": CSRF_TOKEN},
        },
    }


def test_a_time_zone_offset_postgresql_cannot_store_is_compared_in_utc(api_client):
    """Found by schemathesis: ISO 8601 allows offsets beyond PostgreSQL's +-15:59."""
    for name in ("queued_before", "queued_after"):
        for offset in ("-16:00", "+16:00", "-23:59"):
            response = api_client.get("/api/v1/executions", {name: f"2026-01-01T00:00:00{offset}"})
            assert response.status_code == 200, (name, offset, response.status_code)


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_schemathesis_finds_no_server_error_and_no_undocumented_response(case, credentials):
    access = credentials["read" if case.method.upper() == "GET" else "write"]
    case.call_and_validate(
        checks=CHECKS,
        headers=access["headers"],
        cookies=access.get("cookies"),
    )


@pytest.mark.soak
@schema.parametrize()
@hypothesis.settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_schemathesis_soak_with_a_key_and_with_a_staff_session(case, credentials):
    """The long fuzz (`make soak`): many more examples, random, each sent with both kinds of
    credentials (the staff session once found 500s the API key could not reach)."""
    for access in (credentials["read"], credentials["write"]):
        case.call_and_validate(
            checks=CHECKS,
            headers=access["headers"],
            cookies=access.get("cookies"),
        )
