"""Load shedding at the door: an execution is accepted only while the queue has room.

Two bounds, checked before anything is written: the executions waiting for one cluster
(`EXECUTIONS_MAX_QUEUED`, a 503 `queue_full` past it: the service is full) and those one client
has waiting (`EXECUTIONS_MAX_QUEUED_PER_CLIENT`, a 429 `client_queue_full`: that client is over
its share). Both answer with `Retry-After`; as the workers drain the queue, requests are
accepted again. The counts stop at the limit, so checking them costs little however long the
queue is, and both are read in one statement.
"""

from django.conf import settings
from django.db import connections
from django.db.models import Q, QuerySet

from executions.exceptions import ClientQueueFull, QueueFull
from executions.models import Execution
from executions.selectors import execution_client_scope
from providers.calls import providers_routed_with
from providers.models import Provider


def _waiting_rows(condition: Q, *, limit: int) -> QuerySet:
    rows = Execution.objects.filter(condition, status=Execution.Status.QUEUED)
    return rows.values("pk")[:limit]


def _counts(*bounded: QuerySet) -> list[int]:
    """The row count of each bounded query, in one statement (one round trip, whatever the
    number of bounds): `SELECT (SELECT count(*) FROM (...)), ...`."""
    parts, params = [], []
    for queryset in bounded:
        sql, query_params = queryset.query.sql_with_params()
        # The ORM's own SQL and parameters, nested: nothing of the request is pasted in.
        parts.append(f"(SELECT COUNT(*) FROM ({sql}) AS bounded_{len(parts)})")  # noqa: S608
        params.extend(query_params)
    with connections[Execution.objects.db].cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(parts)}", params)
        return list(cursor.fetchone())


def execution_admit(*, provider: Provider, api_key=None, user=None) -> None:
    """Raise ClientQueueFull or QueueFull when a new execution for `provider` must wait."""
    client_limit = settings.EXECUTIONS_MAX_QUEUED_PER_CLIENT
    limit = settings.EXECUTIONS_MAX_QUEUED
    routed = Q(
        requested_provider__in=Provider.objects.filter(providers_routed_with(provider=provider))
    )
    bounds = [_waiting_rows(routed, limit=limit)]
    client = execution_client_scope(api_key=api_key, user=user)
    if client is not None:
        bounds.append(_waiting_rows(client, limit=client_limit))
    waiting, *client_waiting = _counts(*bounds)
    if client_waiting and client_waiting[0] >= client_limit:
        raise ClientQueueFull(client_limit)
    if waiting >= limit:
        raise QueueFull(limit)
