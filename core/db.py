"""Surviving a lost database connection (a restart, a failover, `pg_terminate_backend`).

A connection that the server dropped fails every query until it is closed; Django opens a new
one on the next query after that. `db_retry` does exactly this around an operation: on a
connection error it closes the connection, waits (exponential backoff, bounded in time) and
runs the operation again. Whether an operation may run twice is the caller's to know: reads
may; a guarded update must be able to tell its own earlier success from another process's
(see `executions.services`). Inside an atomic block nothing is retried, since the transaction
is lost with the connection; the error goes to whoever owns the transaction.

For the API, `core.api.errors.api_exception_handler` answers a connection error that no retry
absorbed with the 503 `database_unavailable` and a `Retry-After`, never with a 500.
"""

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What psycopg and Django raise for a connection the server closed (or never opened).
CONNECTION_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class RetryPolicy:
    """How long `db_retry` keeps trying: pauses double from `first_pause_s` up to `max_pause_s`
    until `max_elapsed_s` would be exceeded. `sleep` and `monotonic` are injectable for tests."""

    max_elapsed_s: float
    first_pause_s: float = 0.05
    max_pause_s: float = 2.0
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic


# A request answers a 503 quickly rather than hold a client (and a web worker) for long.
REQUEST_RETRY = RetryPolicy(max_elapsed_s=1.0)
# A worker's writes record work already done (a provider call made): worth waiting for, but
# for less than the reaper's stale threshold (`EXECUTIONS_STALE_AFTER_S`, 60 s by default).
WORKER_RETRY = RetryPolicy(max_elapsed_s=30.0)


def db_reconnect(*, using: str = DEFAULT_DB_ALIAS) -> None:
    """Drop this thread's connection, so that the next query opens a new one."""
    with contextlib.suppress(DatabaseError):
        connections[using].close()


def db_retry(
    operation: Callable[[], T], *, policy: RetryPolicy | None = None, using: str = DEFAULT_DB_ALIAS
) -> T:
    """`operation()`, run again on a new connection after each connection error until the
    policy's time is up (then the last error propagates). The policy defaults to
    `WORKER_RETRY`, looked up at each call."""
    policy = policy or WORKER_RETRY
    connection = connections[using]
    started = policy.monotonic()
    pause = policy.first_pause_s
    while True:
        try:
            return operation()
        except CONNECTION_ERRORS as error:
            if connection.in_atomic_block:
                raise
            # Whatever happens next, this connection is of no use any more.
            db_reconnect(using=using)
            if policy.monotonic() - started + pause > policy.max_elapsed_s:
                raise
            logger.warning(
                "Database connection lost (%s); reconnecting and trying again in %.2fs",
                (str(error).strip() or type(error).__name__).splitlines()[0],
                pause,
            )
            policy.sleep(pause)
            pause = min(pause * 2, policy.max_pause_s)


def db_retrying(policy: RetryPolicy | None = None):
    """Decorator: every call of the function goes through `db_retry`. Put it outside
    `transaction.atomic`, so that each try is a whole transaction."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            return db_retry(lambda: function(*args, **kwargs), policy=policy)

        return wrapper

    return decorate
