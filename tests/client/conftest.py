"""Fixtures of the client's tests: a live server (a real threaded HTTP server on 127.0.0.1)
with the `qa` signature (question -> answer, `production` at version 1), providers answering
with deterministic engines, an API key, and a proxy in front of the server."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from django.db import connection

from executions.models import Execution
from executions.tasks import execution_run
from registry.services.aliases import alias_set
from tests.client.proxy import DroppingProxy
from tests.support.engines import BROKEN_ENGINE, ECHO_ENGINE
from tests.support.factories import APIKeyFactory, ProviderFactory, SignatureVersionFactory
from tests.support.servers import serving
from tests.support.specs import QA_LEVEL_SPEC, QA_SPEC


@pytest.fixture
def qa_signature(transactional_db):
    """`qa` version 1 (question -> answer), aliased `production`, and a version 2 that takes
    a `level` as well, so that a call which ran version 1 ran the alias."""
    first = SignatureVersionFactory(signature__name="qa", spec=QA_SPEC)
    SignatureVersionFactory(signature=first.signature, spec=QA_LEVEL_SPEC)
    alias_set(signature=first.signature, name="production", version=first)
    return first.signature


@pytest.fixture
def providers(transactional_db) -> None:
    ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    ProviderFactory(name="broken", engine_path=BROKEN_ENGINE)


@pytest.fixture
def raw_key(transactional_db) -> str:
    return APIKeyFactory(name="python-client").raw_key


@pytest.fixture
def server_url(live_server, qa_signature, providers) -> str:
    return live_server.url


@pytest.fixture
def start_proxy(server_url) -> Iterator[Callable[..., DroppingProxy]]:
    """`start_proxy(drops=n)`: a running proxy to the live server dropping n answers."""
    with ExitStack() as stack:

        def start(*, drops: int = 0) -> DroppingProxy:
            return stack.enter_context(serving(DroppingProxy(server_url, drops=drops)))

        yield start


@pytest.fixture
def no_workers(monkeypatch) -> None:
    """Executions stay queued: enqueued tasks go to the broker, which nothing reads, instead
    of running inline (the test settings' django-q2 `sync`)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def run_when_queued() -> Iterator[Callable[..., None]]:
    """`run_when_queued(after_s=...)`: a worker thread that waits for a queued execution,
    lets it wait `after_s` more, then runs it with the real task (as a cluster's worker)."""
    threads = []

    def work(after_s: float) -> None:
        deadline = time.monotonic() + 30
        try:
            while not (queued := Execution.objects.filter(status="queued").first()):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
            time.sleep(after_s)
            execution_run(str(queued.id))
        finally:
            connection.close()

    def start(*, after_s: float) -> None:
        thread = threading.Thread(target=work, args=(after_s,), daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    for thread in threads:
        thread.join(timeout=30)
