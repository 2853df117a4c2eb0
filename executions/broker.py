"""What django-q2's broker still holds of the executions' tasks, for the reaper.

A cluster that dies leaves behind the tasks it had pulled but not run: the ORM broker keeps
each one locked until the cluster's `retry` (its timeout + 60 s) has passed, so a restarted
cluster waits that long for them; the Redis broker has removed them from its list for good.
The reaper asks which tasks of still-queued executions are stranded like this and enqueues
those executions again; a task that turns up after all finds nothing left to claim.
"""

from collections.abc import Collection
from datetime import datetime, timedelta

from django.conf import settings
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.signing import BadSignature, SignedPackage


def broker_queue_name(cluster: str | None) -> str:
    """The broker queue a route's cluster reads (None: the default cluster)."""
    return cluster or settings.Q_CLUSTER.get("name", "default")


def _retry_s(name: str) -> float:
    base = settings.Q_CLUSTER
    own = base.get("ALT_CLUSTERS", {}).get(name, {})
    return float(own.get("retry", base.get("retry", 60)))


def _task_id(payload: str | bytes) -> str | None:
    try:
        return SignedPackage.loads(payload).get("id")
    except (BadSignature, AttributeError, TypeError, ValueError):
        return None


def broker_stranded_task_ids(
    *, cluster: str | None, task_ids: Collection[str], pulled_before: datetime, now: datetime
) -> set[str]:
    """Of `task_ids` (the tasks of executions that are still queued), those no worker will run
    by itself soon: gone from the broker (delivered, yet nothing claimed the execution), or
    pulled by a cluster before `pulled_before` and still not run (the cluster died holding it,
    or is far behind: either way another delivery is harmless)."""
    wanted = set(task_ids)
    if not wanted:
        return set()
    name = broker_queue_name(cluster)
    broker = get_broker(list_key=name)
    if isinstance(broker, ORM):
        # The ORM broker's `lock` is "locked until": pulling a task sets it to now + retry.
        retry = timedelta(seconds=_retry_s(name))
        pending: set[str] = set()
        for row in broker.get_connection().filter(key=name).only("payload", "lock"):
            task_id = _task_id(row.payload)
            if task_id not in wanted:
                continue
            pulled = row.lock is not None and row.lock > now
            if not pulled or row.lock - retry >= pulled_before:
                pending.add(task_id)
        return wanted - pending
    if isinstance(broker, Redis):
        waiting = {
            _task_id(payload) for payload in broker.connection.lrange(broker.list_key, 0, -1)
        }
        return wanted - waiting
    # A broker this project does not configure: nothing known, nothing recovered.
    return set()
