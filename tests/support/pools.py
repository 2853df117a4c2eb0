"""Pools of fake OpenAI-compatible replicas for the pool tests: the providers (through the
services), their breakers' thresholds, killing and restarting a replica, and many executions
run at once through the real services, each thread on its own database connection.
"""

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.db import connections

from executions.models import Execution
from executions.services.create import execution_create
from providers import services
from providers.models import CircuitBreaker, Provider
from tests.support.factories import ProviderFactory
from tests.support.servers import OpenAIServer, serving
from tests.support.specs import QA_LEVEL_INPUTS


def configure_breaker(provider: Provider, **values) -> None:
    """Set thresholds of the provider's breaker (created closed when it has none yet)."""
    CircuitBreaker.objects.update_or_create(provider=provider, defaults=values)


def pool_of(
    servers: list[OpenAIServer],
    *,
    name: str = "replicas",
    policy: str = Provider.Policy.LEAST_OUTSTANDING,
    weights: list[int] | None = None,
    fallbacks: tuple[Provider, ...] = (),
    breaker: dict | None = None,
) -> tuple[Provider, list[Provider]]:
    """A pool with one `openai` member per server (`<name>-0`, `<name>-1`, ...), in order."""
    members = [
        ProviderFactory(
            name=f"{name}-{index}", kind="openai", base_url=server.base_url, timeout_s=10.0
        )
        for index, server in enumerate(servers)
    ]
    for member in members:
        configure_breaker(member, **(breaker or {}))
    pool = services.provider_create(
        name=name,
        kind=Provider.Kind.POOL,
        policy=policy,
        members=list(zip(members, weights or [1] * len(members), strict=True)),
        fallbacks=list(fallbacks),
    )
    return pool, members


class Replica:
    """A fake replica that can be killed (its port then refuses connections) and restarted on
    the same port, as a crashed and restarted model server would be."""

    def __init__(self, **options) -> None:
        self.options = options
        self.server = OpenAIServer(**options)
        self.port = self.server.server_address[1]
        self.served = 0
        self._context = serving(self.server)
        self._context.__enter__()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def requests(self) -> int:
        """Requests received, over every life of the replica."""
        return self.served + len(self.server.requests)

    def kill(self) -> None:
        self._context.__exit__(None, None, None)
        self._context = None

    def restart(self) -> None:
        self.served += len(self.server.requests)
        self.server = OpenAIServer(**(self.options | {"port": self.port}))
        self._context = serving(self.server)
        self._context.__enter__()

    def close(self) -> None:
        if self._context is not None:
            self.kill()


@dataclass
class Load:
    """Executions run by `run_load`: final status of each, by execution id."""

    statuses: dict[str, str] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def by_status(self) -> Counter:
        return Counter(self.statuses.values())


def run_load(
    *,
    provider: str,
    count: int,
    threads: int,
    load: Load | None = None,
    after_each: Callable[[int], None] | None = None,
) -> Load:
    """Run `count` `qa` executions on `provider` through `execution_create` (Q_SYNC: each runs
    in its thread once committed, through the real task), `threads` at a time. `after_each(n)`
    is called once the n-th has finished (from that thread). Needs a transactional test."""
    load = load or Load()
    finished = 0

    def one(_: int) -> None:
        nonlocal finished
        try:
            execution = execution_create(
                signature="qa", inputs=QA_LEVEL_INPUTS, provider=provider
            ).execution
            status = Execution.objects.values_list("status", flat=True).get(pk=execution.pk)
            with load.lock:
                load.statuses[str(execution.pk)] = status
                finished += 1
                done = finished
            if after_each is not None:
                after_each(done)
        except Exception as exc:  # reported to the test, not lost in the thread
            with load.lock:
                load.errors.append(exc)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(count)))
    return load
