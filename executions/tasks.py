"""django-q2 tasks of the executions app. They take ids and call services.

A task of a remote or custom provider runs its execution inline, on the worker's own thread.

A local model's executions decode together in the runtime's continuous batch, so its task
does not wait for its execution: it claims it (and any queued companions of the same provider,
up to the free places of the batch), hands them to the process's runner threads, and returns,
so the worker pulls the next task at once and an execution that arrives while a batch is
decoding joins it at the next step. The task waits only while the batch is full. The
executions' rows carry their state: a worker killed with executions in hand leaves them
running, and the reaper takes them back once their heartbeat is stale, as it would for one
killed in the middle of a task.

Every execution this process runs is kept alive by one heartbeat thread per process, not a
thread per task.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from core.db import RetryPolicy, db_retry
from executions.services import reaper
from executions.services.retention import delivered_tasks_prune
from executions.services.runs import (
    Claim,
    execution_claim,
    execution_claim_companions,
    execution_heartbeat,
    execution_load,
    execution_process,
)
from providers.calls import provider_route

logger = logging.getLogger(__name__)


class _Heartbeats:
    """The heartbeat of every execution running in this process, from one thread."""

    def __init__(self) -> None:
        self._claims: set[Claim] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, claims: list[Claim]) -> None:
        with self._lock:
            self._claims.update(claims)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._beat, name="execution-heartbeats", daemon=True
                )
                self._thread.start()

    def remove(self, claim: Claim) -> None:
        with self._lock:
            self._claims.discard(claim)

    def _beat(self) -> None:
        # A beat is worth a few tries on a new connection, but not longer than till the next.
        policy = RetryPolicy(max_elapsed_s=settings.EXECUTIONS_HEARTBEAT_S)
        pause = threading.Event()
        while not pause.wait(settings.EXECUTIONS_HEARTBEAT_S):
            with self._lock:
                claims = list(self._claims)
                if not claims:
                    # Nothing running: the thread ends (the next `add` starts another) and
                    # does not keep a database connection open while the worker is idle.
                    self._thread = None
                    break
            try:
                db_retry(lambda claims=claims: execution_heartbeat(claims=claims), policy=policy)
            except DatabaseError:
                # A missed beat is harmless unless they keep failing for the whole stale
                # threshold, and then the reaper's recovery is the right outcome anyway.
                # (db_retry has already dropped a lost connection.)
                logger.exception("Could not write the heartbeat of %d executions", len(claims))
        connection.close()


class _Runners:
    """The threads that run a local model's executions while the worker takes more tasks.

    `places` bounds the executions in hand (the batch the runtime steps together); a task
    waits for a free place before it claims, so the queue keeps the rest for other workers."""

    def __init__(self, places: int) -> None:
        self.places = threading.BoundedSemaphore(places)
        self.pool = ThreadPoolExecutor(max_workers=places, thread_name_prefix="execution")

    def submit(self, claim: Claim, execution) -> None:
        self.pool.submit(self._run, claim, execution)

    def _run(self, claim: Claim, execution) -> None:
        try:
            _run_claimed(claim, execution)
        except Exception:
            # Logged by execution_process already; the row says what happened (or stays
            # running for the reaper when the database was lost).
            logger.debug("Execution %s ended with an error", claim.execution_id, exc_info=True)
        finally:
            # As the worker does after each task: a thread's connection is not kept beyond
            # CONN_MAX_AGE (closed now by default), nor left open while the worker is idle.
            close_old_connections()
            self.places.release()


_heartbeats = _Heartbeats()
_runners: dict[int, _Runners] = {}
_runners_lock = threading.Lock()


def _runners_for(batch_size: int) -> _Runners:
    with _runners_lock:
        runners = _runners.get(batch_size)
        if runners is None:
            runners = _runners[batch_size] = _Runners(batch_size)
        return runners


def _run_claimed(claim: Claim, execution=None) -> str:
    _heartbeats.add([claim])
    try:
        return execution_process(claim=claim, execution=execution)
    finally:
        _heartbeats.remove(claim)


def execution_run(execution_id: str) -> str:
    """Run one execution: inline, or, for a local model, handed to the runners with the queued
    companions that fit in the batch."""
    claim = execution_claim(execution_id=execution_id)
    if claim is None:
        return "not queued any more (claimed by another delivery, cancelled or finished)"
    execution = execution_load(claim=claim)
    route = provider_route(provider=execution.requested_provider)
    if route.batch_size <= 1:
        return f"{claim.execution_id}: {_run_claimed(claim, execution)}"
    runners = _runners_for(route.batch_size)
    # Claimed already: its place is waited for, however long the batch stays full.
    _heartbeats.add([claim])
    runners.places.acquire()
    _heartbeats.remove(claim)
    runners.submit(claim, execution)
    free = 0
    while free < route.batch_size - 1 and runners.places.acquire(blocking=False):
        free += 1
    companions = execution_claim_companions(claim=claim, limit=free) if free else []
    for _ in range(free - len(companions)):
        runners.places.release()
    for companion in companions:
        runners.submit(companion, None)
    handed = [claim, *companions]
    return "running in the batch: " + ", ".join(str(item.execution_id) for item in handed)


def execution_reap_stale() -> str:
    """Scheduled: recover running executions whose worker stopped sending heartbeats (and keep
    the newest Q_SUCCESSES_KEPT delivered tasks)."""
    result = reaper.execution_reap_stale()
    pruned = delivered_tasks_prune(keep=settings.Q_SUCCESSES_KEPT)
    return (
        f"requeued {len(result.requeued)}, failed {len(result.failed)}, "
        f"enqueued again {len(result.enqueued)}; pruned {pruned} delivered tasks"
    )
