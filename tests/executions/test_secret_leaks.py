"""A provider's API key never leaves the toolkit, whatever its upstream echoes back.

A key is planted in a provider's key variable; upstreams on 127.0.0.1 echo the request's
`Authorization` header and the key in their status line, headers, JSON error bodies, plain-text
tracebacks and answers, and an engine quotes it in its exceptions and their causes. Executions
run with and without fallback (through the API, single and batch, sync and async); then every
API response, every admin page, every log record, `/metrics` and a dump of every table are
searched for the key: it appears nowhere. Staff still see what the upstream said, scrubbed.
"""

import json
import logging
import secrets
from urllib.parse import quote

import pytest
from django.db import connection
from django.urls import reverse

from executions.models import Execution, ExecutionAttempt
from providers.models import BreakerEvent, CircuitBreaker, Provider
from tests.executions.conftest import EXECUTE
from tests.support.engines import LEAKY_ENGINE
from tests.support.factories import ProviderFactory
from tests.support.specs import QA_LEVEL_INPUTS

KEY_ENV = "DSPY_TOOLKIT_PROVIDER_KEY_LEAK_TEST"
REDACTED = "[redacted]"

# name: (echo status, echo body) of its upstream.
REMOTES = {
    "echo-500": (500, "error"),
    "echo-401": (401, "error"),
    "echo-429": (429, "error"),
    "echo-400": (400, "error"),
    "echo-trace": (500, "traceback"),
    "echo-200-trace": (200, "traceback"),
    "echo-answer": (200, "completion"),
}


@pytest.fixture
def planted(monkeypatch) -> str:
    """The key: random, and shaped like no credential pattern, so only knowing the value
    can remove it."""
    key = f"planted{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_ENV, key)
    return key


@pytest.fixture
def leaky_providers(planted, start_openai_server, echo_provider) -> dict[str, Provider]:
    providers = {}
    for name, (status, body) in REMOTES.items():
        server = start_openai_server(mode="echo", echo_status=status, echo_body=body)
        providers[name] = ProviderFactory(
            name=name,
            kind="openai",
            model="test-model",
            base_url=server.base_url,
            api_key_env=KEY_ENV,
            adapter="compact",
        )
    for name, model in (("engine", "scripted"), ("engine-unexpected", "unexpected")):
        providers[name] = ProviderFactory(
            name=name, model=model, engine_path=LEAKY_ENGINE, api_key_env=KEY_ENV
        )
    # With fallback: failures first, then an answer; and a chain that fails everywhere.
    providers["fallback-to-echo"] = ProviderFactory(
        name="fallback-to-echo",
        kind="openai",
        model="test-model",
        base_url=providers["echo-500"].base_url,
        api_key_env=KEY_ENV,
        fallbacks=(providers["engine"], providers["echo-trace"], echo_provider),
    )
    providers["fallback-exhausted"] = ProviderFactory(
        name="fallback-exhausted",
        kind="openai",
        model="test-model",
        base_url=providers["echo-trace"].base_url,
        api_key_env=KEY_ENV,
        fallbacks=(providers["engine"], providers["echo-200-trace"]),
    )
    return providers


def _body(provider: str, **fields) -> dict:
    return {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": provider} | fields


def _forms(key: str) -> list[str]:
    return [key, key.upper(), quote(key), json.dumps(key)[1:-1]]


def _assert_absent(key: str, where: str, text: str) -> None:
    # pytest.fail, not a bare assert: the report must not print the key either.
    if any(form.lower() in text.lower() for form in _forms(key)):
        pytest.fail(f"the planted key appears in {where}")


def _database_dump() -> dict[str, str]:
    dump = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            rows = cursor.fetchall()
            dump[table] = repr(
                [
                    [
                        bytes(value).decode("utf-8", "replace")
                        if isinstance(value, bytes | memoryview)
                        else value
                        for value in row
                    ]
                    for row in rows
                ]
            )
    return dump


def _admin_pages(admin_client) -> dict[str, str]:
    pages = {}
    for model in (Execution, ExecutionAttempt, CircuitBreaker, BreakerEvent, Provider):
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        pages[changelist] = admin_client.get(changelist)
        for pk in model.objects.values_list("pk", flat=True):
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
            pages[url] = admin_client.get(url)
    search = reverse("admin:executions_executionattempt_changelist")
    pages[f"{search}?q=planted"] = admin_client.get(search, {"q": "planted"})
    for url, response in pages.items():
        assert response.status_code == 200, url
    return {url: response.content.decode() for url, response in pages.items()}


def _log_text(caplog) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts += [record.getMessage(), record.exc_text or "", record.stack_info or ""]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


@pytest.mark.django_db(transaction=True)
def test_a_planted_key_appears_nowhere(
    planted, leaky_providers, qa_version, api_client, admin_client, client, caplog
):
    caplog.set_level(logging.DEBUG)
    responses: dict[str, str] = {}

    def call(label: str, response, *statuses: int) -> dict:
        assert response.status_code in statuses, (label, response.content)
        responses[label] = response.content.decode()
        return response.json()

    executed = {
        name: call(f"execute {name}", api_client.post(EXECUTE, _body(name), format="json"), 200)
        for name in leaky_providers
    }
    batch = call(
        "batch",
        api_client.post(
            f"{EXECUTE}/batch",
            {"items": [_body("echo-500"), _body("fallback-to-echo"), _body("engine")]},
            format="json",
        ),
        200,
    )
    queued = call(
        "async", api_client.post(EXECUTE, _body("echo-401", mode="async"), format="json"), 202
    )

    ids = [data["id"] for data in executed.values()]
    ids += [item["execution"]["id"] for item in batch["items"]] + [queued["id"]]
    for execution_id in ids:
        call(f"detail {execution_id}", api_client.get(f"/api/v1/executions/{execution_id}"), 200)
    call("list", api_client.get("/api/v1/executions", {"limit": 100}), 200)
    call("list failed", api_client.get("/api/v1/executions", {"status": "failed"}), 200)
    call("providers", admin_client.get("/api/v1/providers/"), 200)
    call("provider", admin_client.get("/api/v1/providers/echo-500/"), 200)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    admin_pages = _admin_pages(admin_client)

    for label, text in responses.items():
        _assert_absent(planted, f"the API response: {label}", text)
    for url, text in admin_pages.items():
        _assert_absent(planted, f"the admin page {url}", text)
    _assert_absent(planted, "/metrics", metrics.content.decode())
    _assert_absent(planted, "the log records", _log_text(caplog))
    for table, text in _database_dump().items():
        _assert_absent(planted, f"the table {table}", text)

    # What happened: failures and answers, with and without fallback.
    assert executed["fallback-to-echo"]["status"] == "succeeded"
    assert executed["fallback-to-echo"]["provider"] == "echo"
    assert executed["echo-answer"]["status"] == "succeeded"
    assert executed["fallback-exhausted"]["error"]["code"] == "providers_exhausted"
    assert executed["echo-500"]["error"]["message"] == (
        "Every provider in the fallback chain failed: echo-500: LMServerError: The provider "
        "echo-500 answered HTTP 500 (server error)."
    )
    assert executed["echo-401"]["error"]["code"] == "auth"
    assert len(batch["items"]) == 3

    # Clients got the toolkit's words; staff see the upstream's own, scrubbed.
    attempts = ExecutionAttempt.objects.filter(outcome="failed")
    assert attempts.count() >= len(REMOTES)
    for attempt in attempts:
        assert attempt.error_message.startswith(("The provider", "The answer")), attempt
        assert attempt.error_detail
    server_error = attempts.filter(provider__name="echo-500").first()
    assert "Invalid header Authorization: Bearer [redacted]" in server_error.error_detail
    assert "Invalid header Authorization" not in responses["execute echo-500"]
    engine_failure = attempts.filter(provider__name="engine").first().error_detail
    assert "backend failed for Authorization=[redacted]" in engine_failure
    assert "ValueError: bad key [redacted]" in engine_failure  # the cause, scrubbed
    page = admin_pages[reverse("admin:executions_executionattempt_change", args=[server_error.pk])]
    assert "Invalid header Authorization: Bearer [redacted]" in page
    answered = Execution.objects.get(id=executed["echo-answer"]["id"])
    assert answered.outputs["answer"].startswith("Bearer [redacted]")
