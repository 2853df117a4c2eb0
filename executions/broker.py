"""django-q2's broker as the executions use it: the ORM broker woken by notifications, and
what the broker still holds of the executions' tasks, for the reaper.

A cluster that dies leaves behind the tasks it had pulled but not run: the ORM broker keeps
each one locked until the cluster's `retry` (its timeout + 60 s) has passed, so a restarted
cluster waits that long for them; the Redis broker has removed them from its list for good.
The reaper asks which tasks of still-queued executions are stranded like this and enqueues
those executions again; a task that turns up after all finds nothing left to claim.
"""

from collections.abc import Collection
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.signing import BadSignature, SignedPackage

from core import notify


def tasks_channel(queue: str) -> str:
    """The notification channel of one broker queue."""
    return f"tasks:{queue}"


class NotifiedORM(ORM):
    """django-q2's ORM broker, which an idle cluster polls every `poll` seconds, made to wait
    for a notification of each enqueued task instead (`core.notify`): a task reaches an idle
    worker as soon as it is committed, and an idle cluster costs one query a second, not
    twenty. Without live notifications it polls as the ORM broker does."""

    def enqueue(self, task):
        package_id = super().enqueue(task)
        notify.notify(tasks_channel(self.list_key or Conf.CLUSTER_NAME))
        return package_id

    def dequeue(self):
        # Subscribed before looking, so that a task enqueued in between still wakes it.
        with notify.subscribe(tasks_channel(self.list_key), keys=None) as subscription:
            tasks = self._pull()
            if tasks or not subscription.live:
                if not tasks:
                    # The ORM broker's own pause: the poll interval.
                    subscription.wait(Conf.POLL)
                return tasks or None
            # Until the next look anyway (`Q_IDLE_LOOK_S`), which is also how soon it sees a stop.
            if subscription.wait(settings.Q_IDLE_LOOK_S):
                return self._pull() or None
            return None

    def _pull(self) -> list[tuple[int, str]]:
        """Lock up to `bulk` waiting tasks for this cluster (the ORM broker's own claim: a task
        another cluster locked first is skipped)."""
        connection = self.get_connection()
        taken = []
        for task in connection.filter(key=self.list_key, lock__lt=timezone.now())[: Conf.BULK]:
            if connection.filter(id=task.id, lock=task.lock).update(lock=self.timeout(task)):
                taken.append((task.pk, task.payload))
        return taken


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
