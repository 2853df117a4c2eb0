"""Load shedding at the door: an execution is accepted only while the queue has room.

Two bounds, checked before anything is written: the executions waiting for one cluster
(`EXECUTIONS_MAX_QUEUED`, a 503 `queue_full` past it: the service is full) and those one client
has waiting (`EXECUTIONS_MAX_QUEUED_PER_CLIENT`, a 429 `client_queue_full`: that client is over
its share). Both answer with `Retry-After`; as the workers drain the queue, requests are
accepted again. The counts stop at the limit, so checking them costs little however long the
queue is.
"""

from django.conf import settings
from django.db.models import Q

from executions.exceptions import ClientQueueFull, QueueFull
from executions.models import Execution
from executions.selectors import execution_client_scope
from providers.calls import providers_routed_with
from providers.models import Provider


def _waiting(condition: Q, *, limit: int) -> int:
    rows = Execution.objects.filter(condition, status=Execution.Status.QUEUED)
    return rows.values("pk")[:limit].count()


def execution_admit(*, provider: Provider, api_key=None, user=None) -> None:
    """Raise ClientQueueFull or QueueFull when a new execution for `provider` must wait."""
    client_limit = settings.EXECUTIONS_MAX_QUEUED_PER_CLIENT
    client = execution_client_scope(api_key=api_key, user=user)
    if client is not None and _waiting(client, limit=client_limit) >= client_limit:
        raise ClientQueueFull(client_limit)
    limit = settings.EXECUTIONS_MAX_QUEUED
    routed = Q(
        requested_provider__in=Provider.objects.filter(providers_routed_with(provider=provider))
    )
    if _waiting(routed, limit=limit) >= limit:
        raise QueueFull(limit)
