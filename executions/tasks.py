"""django-q2 tasks of the executions app. They take ids and call services.

So that concurrent executions of one local model reach the runtime's batched generation
together, the task that claims an execution also claims as many other queued executions of the
same provider as the provider's route batches (`providers.calls.provider_route`) and runs
them all in a thread pool; the tasks of the companions it took find nothing left to claim and
return at once.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError, connection

from core.db import RetryPolicy, db_retry
from executions.models import Execution
from executions.services import reaper
from executions.services.runs import (
    Claim,
    execution_claim,
    execution_claim_companions,
    execution_heartbeat,
    execution_process,
)
from providers.calls import provider_route

logger = logging.getLogger(__name__)


class _Heartbeat:
    """Refreshes the claimed rows' heartbeat from a background thread while they run."""

    def __init__(self, claims: list[Claim]) -> None:
        self.claims = claims
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="execution-heartbeat", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        try:
            # A beat is worth a few tries on a new connection, but not longer than till the next.
            policy = RetryPolicy(max_elapsed_s=settings.EXECUTIONS_HEARTBEAT_S)
            while not self.stop.wait(settings.EXECUTIONS_HEARTBEAT_S):
                try:
                    db_retry(lambda: execution_heartbeat(claims=self.claims), policy=policy)
                except DatabaseError:
                    # A missed beat is harmless unless they keep failing for the whole stale
                    # threshold, and then the reaper's recovery is the right outcome anyway.
                    # (db_retry has already dropped a lost connection.)
                    logger.exception("Could not write the heartbeat of %s", self.claims)
        finally:
            connection.close()


def _process_in_thread(claim: Claim) -> str:
    try:
        return execution_process(claim=claim)
    finally:
        # Each pool thread has its own database connection: close it, not leak it.
        connection.close()


def execution_run(execution_id: str) -> str:
    """Run one execution (and, for a local model, the queued companions it can batch with)."""
    claim = execution_claim(execution_id=execution_id)
    if claim is None:
        return "not queued any more (claimed by another delivery, cancelled or finished)"
    claims = [claim]
    execution = db_retry(
        lambda: Execution.objects.select_related("requested_provider").get(id=claim.execution_id)
    )
    route = provider_route(provider=execution.requested_provider)
    if route.batch_size > 1:
        claims += execution_claim_companions(claim=claim, limit=route.batch_size - 1)
    with _Heartbeat(claims):
        if len(claims) == 1:
            statuses = [execution_process(claim=claim)]
        else:
            with ThreadPoolExecutor(
                max_workers=len(claims), thread_name_prefix="execution"
            ) as pool:
                statuses = list(pool.map(_process_in_thread, claims))
    return ", ".join(
        f"{item.execution_id}: {status}" for item, status in zip(claims, statuses, strict=True)
    )


def execution_reap_stale() -> str:
    """Scheduled: recover running executions whose worker stopped sending heartbeats."""
    result = reaper.execution_reap_stale()
    return (
        f"requeued {len(result.requeued)}, failed {len(result.failed)}, "
        f"enqueued again {len(result.enqueued)}"
    )
