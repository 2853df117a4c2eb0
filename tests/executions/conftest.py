"""Fixtures of the executions tests: signatures, providers, a movable clock, API clients,
OpenAI-compatible HTTP servers and real django-q2 clusters."""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey

from providers.models import Provider, ProviderFallback
from registry.services import signature_create, signature_version_create

QA_SPEC = {
    "instructions": "Answer the question.",
    "input_fields": [
        {"name": "question", "type": "str", "description": "The question."},
        {"name": "level", "type": "int", "description": "How detailed."},
    ],
    "output_fields": [{"name": "answer", "type": "str", "description": "The answer."}],
    "module_kind": "Predict",
}
# Inputs valid for QA_SPEC, shared by the tests that run it.
INPUTS = {"question": "What is the capital of France?", "level": 1}
EXECUTE = "/api/v1/dspy/execute"
ECHO_ENGINE = "tests.executions.engines.EchoEngine"
BROKEN_ENGINE = "tests.executions.engines.BrokenEngine"
SLOW_ENGINE = "tests.executions.engines.SlowEngine"


class MovableClock:
    """A `now` callable for the breaker and the reaper that tests move by hand."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def make_provider(db):
    def make(name: str = "remote", *, fallbacks: tuple[Provider, ...] = (), **fields) -> Provider:
        defaults = {"kind": Provider.Kind.OPENAI, "model": "test-model", "base_url": ""}
        provider = Provider.objects.create(name=name, **(defaults | fields))
        for position, fallback in enumerate(fallbacks):
            ProviderFallback.objects.create(provider=provider, fallback=fallback, position=position)
        return provider

    return make


@pytest.fixture
def echo_provider(make_provider) -> Provider:
    return make_provider(
        "echo", kind=Provider.Kind.CUSTOM, engine_path=ECHO_ENGINE, adapter="compact"
    )


@pytest.fixture
def broken_provider(make_provider) -> Provider:
    return make_provider(
        "broken", kind=Provider.Kind.CUSTOM, engine_path=BROKEN_ENGINE, adapter="compact"
    )


@pytest.fixture
def qa(db):
    """The `qa` signature with one version (question: str, level: int -> answer: str)."""
    signature = signature_create(name="qa", description="Questions.")
    return signature_version_create(signature=signature, spec=QA_SPEC).version


@pytest.fixture
def api_key(db) -> tuple[APIKey, str]:
    return APIKey.objects.create_key(name="client")


@pytest.fixture
def client(api_key) -> APIClient:
    """An API client authenticated with an API key."""
    api_client = APIClient()
    api_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
    return api_client


@pytest.fixture
def staff_client(db) -> APIClient:
    user = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    api_client = APIClient(enforce_csrf_checks=True)
    api_client.force_login(user)
    return api_client


class OpenAIHandler(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat endpoint: answers 500 or a ChatAdapter reply."""

    # Without it, each request picked up about 44 ms of delay on this machine.
    disable_nagle_algorithm = True

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests += 1
        if self.server.failing:
            status, body = 500, {"error": {"message": "internal error", "type": "server_error"}}
        else:
            content = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
            status, body = (
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "test-model",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                },
            )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def openai_server():
    """Start an OpenAI-compatible server on 127.0.0.1 (optionally on a given port)."""
    servers = []

    def start(*, failing: bool, port: int = 0) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), OpenAIHandler)
        server.failing = failing
        server.requests = 0
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
