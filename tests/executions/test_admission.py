"""Overload is shed at the door: past the queue bounds, execute answers 429 or 503 with
Retry-After, stores nothing, and accepts again once the queue drains."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from executions.models import Execution
from tests.support.errors import api_error
from tests.support.factories import APIKeyFactory

EXECUTE = "/api/v1/dspy/execute"
REQUEST = {"signature": "qa", "inputs": {"question": "q", "level": 1}, "mode": "async"}


@pytest.fixture
def held_queue(settings, qa_version, echo_provider, monkeypatch):
    """Executions stay queued: no worker takes them (the broker is not called)."""
    monkeypatch.setattr("executions.services.queue.async_task", lambda *args, **kwargs: "held")
    settings.EXECUTIONS_MAX_QUEUED = 6
    settings.EXECUTIONS_MAX_QUEUED_PER_CLIENT = 4
    return qa_version


def _client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


def test_a_client_over_its_share_gets_a_429_then_the_service_a_503(held_queue):
    first, second = (
        _client(APIFactory.raw_key) for APIFactory in (APIKeyFactory(), APIKeyFactory())
    )
    for _ in range(4):
        assert first.post(EXECUTE, REQUEST).status_code == 202
    refused = first.post(EXECUTE, REQUEST)
    assert api_error(refused, 429)["code"] == "client_queue_full"
    assert int(refused["Retry-After"]) > 0
    for _ in range(2):
        assert second.post(EXECUTE, REQUEST).status_code == 202
    full = second.post(EXECUTE, REQUEST)
    assert api_error(full, 503)["code"] == "queue_full"
    assert int(full["Retry-After"]) > 0
    assert Execution.objects.count() == 6


def test_the_api_accepts_again_once_the_queue_drains(held_queue):
    client = _client(APIKeyFactory().raw_key)
    for _ in range(4):
        client.post(EXECUTE, REQUEST)
    assert client.post(EXECUTE, REQUEST).status_code == 429
    Execution.objects.filter(status=Execution.Status.QUEUED).update(
        status=Execution.Status.CANCELLED, finished_at="2026-01-01T00:00:00Z"
    )
    assert client.post(EXECUTE, REQUEST).status_code == 202


@pytest.mark.django_db(transaction=True)
def test_concurrent_clients_cannot_overfill_the_queue_much(held_queue, live_server):
    """16 clients at once: each bound is checked before the write, so concurrent requests can
    pass it together only by the number of requests in flight, never without bound."""
    import httpx

    keys = [APIKeyFactory().raw_key for _ in range(16)]
    statuses: list[int] = []
    lock = threading.Lock()

    def submit(key: str) -> None:
        try:
            with httpx.Client(base_url=live_server.url, timeout=30) as http:
                for _ in range(5):
                    answer = http.post(
                        EXECUTE, json=REQUEST, headers={"Authorization": f"Api-Key {key}"}
                    )
                    with lock:
                        statuses.append(answer.status_code)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(submit, keys))
    print(
        f"\nadmission: {len(statuses)} submissions from 16 clients: "
        f"{statuses.count(202)} accepted, {statuses.count(429)} x 429, {statuses.count(503)} x 503"
    )
    assert set(statuses) <= {202, 429, 503}
    assert statuses.count(503) > 0
    assert Execution.objects.count() == statuses.count(202)
    assert Execution.objects.count() <= 6 + 16
