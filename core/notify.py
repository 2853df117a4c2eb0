"""Wake-ups across processes: "this happened" from the process that did it to the ones waiting.

A sync request waits for its execution to finish, and an idle task cluster waits for a task to
arrive. Polling the database for either adds the poll interval to every answer and a query
per pause to the database; a notification wakes the waiter the moment the row is committed.

Each channel (`execution_finished`, `tasks:<queue>`) has, in every process that waits on it,
one listener: a daemon thread holding one connection to the notification backend, which wakes
the subscriptions a payload concerns. Backends, chosen by `NOTIFY_BACKEND`:

- `postgres`: `LISTEN`/`NOTIFY` on the database itself. A notification sent inside a
  transaction is delivered when it commits and dropped when it rolls back, so a waiter never
  reads a row before the change it was woken for is visible.
- `redis`: Redis pub/sub, published once the transaction has committed.
- `local`: datagrams between the processes of one machine (Unix sockets in a directory per
  database), for the embedded SQLite default; published once committed.
- `off`: no notifications; waiters poll as they did before.

Notifications are a fast path, never the only one: a waiter re-reads the truth (the database)
at least every `fallback_s` seconds, and every subscription is woken when a listener
(re)connects, since what happened while it was away is unknown.
"""

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)

POSTGRES, REDIS, LOCAL, OFF = "postgres", "redis", "local", "off"
BACKENDS = (POSTGRES, REDIS, LOCAL, OFF)
# How long a listener blocks in one read before it looks at its stop flag.
_READ_S = 1.0
# How long a new subscriber waits for its listener's first connection before polling instead.
_CONNECT_WAIT_S = 2.0
_RECONNECT_S = 1.0
_PREFIX = "dspy_toolkit"


def notify_backend() -> str:
    """The backend in use: `NOTIFY_BACKEND`, where `auto` means the database's own (PostgreSQL),
    else Redis when `REDIS_URL` is set, else local datagrams."""
    chosen = getattr(settings, "NOTIFY_BACKEND", "auto")
    if chosen != "auto":
        return chosen
    if connection.vendor == "postgresql":
        return POSTGRES
    if getattr(settings, "REDIS_URL", None):
        return REDIS
    return LOCAL


def _channel_name(channel: str) -> str:
    # PostgreSQL identifiers stop at 63 bytes; queue names are short, this keeps them unique.
    name = f"{_PREFIX}:{channel}"
    if len(name) > 63:
        name = f"{_PREFIX}:{hashlib.sha1(channel.encode()).hexdigest()}"  # noqa: S324
    return name


def notify(channel: str, payload: str = "") -> None:
    """Tell the processes waiting on `channel` about `payload`, once the current transaction
    (if any) commits. Never raises: a lost notification costs a waiter one fallback pause."""
    backend = notify_backend()
    if backend == OFF:
        return
    name = _channel_name(channel)
    if backend == POSTGRES:
        try:
            # On the caller's connection: inside its transaction, delivered at its commit.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [name, payload])
        except Exception:
            if not connection.in_atomic_block:
                logger.warning("Could not notify %s", name, exc_info=True)
                return
            # Inside a transaction the error is the transaction's (it is aborted): let the
            # caller's own error handling see it.
            raise
        return
    transaction.on_commit(lambda: _publish(backend, name, payload))


def _publish(backend: str, name: str, payload: str) -> None:
    try:
        if backend == REDIS:
            _redis_client().publish(name, payload)
        elif backend == LOCAL:
            _local_send(name, payload)
    except Exception:
        logger.warning("Could not notify %s", name, exc_info=True)


# --- Redis -------------------------------------------------------------------------------

_redis = None


def _redis_client():
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    return _redis


# --- local datagrams ---------------------------------------------------------------------


def _local_directory(name: str) -> Path:
    """Where the listeners of one channel of this database bind their sockets: in the temp
    directory (socket paths stop at 108 bytes), named after the database file."""
    database = str(connection.settings_dict.get("NAME"))
    digest = hashlib.sha1(f"{database}\0{name}".encode()).hexdigest()[:16]  # noqa: S324
    return Path(tempfile.gettempdir()) / f"dspy-toolkit-{os.getuid()}" / digest


def _local_send(name: str, payload: str) -> None:
    directory = _local_directory(name)
    data = payload.encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in directory.glob("*.sock"):
            try:
                sender.sendto(data, str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                # Its listener is gone (a process that was killed cannot unlink its socket).
                with contextlib.suppress(OSError):
                    path.unlink()
            except BlockingIOError:
                # Its queue is full: that listener is far behind and wakes everyone anyway.
                pass


# --- listeners -----------------------------------------------------------------------------


class Subscription:
    """Interest in some payloads of one channel (or any, with `keys` None)."""

    def __init__(self, keys: frozenset[str] | None) -> None:
        self.keys = keys
        self._event = threading.Event()
        # False when the listener could not connect: the caller should poll as without one.
        self.live = False

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Block until woken or `timeout` passes; True when woken (and rearmed)."""
        woken = self._event.wait(max(timeout, 0.0))
        self._event.clear()
        return woken


class _Listener(threading.Thread):
    def __init__(self, channel: str, backend: str) -> None:
        super().__init__(name=f"notify-{channel}", daemon=True)
        self.channel = channel
        self.backend = backend
        self.name_on_backend = _channel_name(channel)
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._keyed: dict[str, set[Subscription]] = {}
        self._any: set[Subscription] = set()
        # Read on the caller's thread: the listener thread has no Django connection of its own.
        self.params = (
            {
                key: value
                for key, value in connection.get_connection_params().items()
                # Django's own cursor class and adapters belong to its connections.
                if key not in ("cursor_factory", "context")
            }
            if backend == POSTGRES
            else None
        )
        self.local_directory = _local_directory(self.name_on_backend) if backend == LOCAL else None

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription.keys is None:
                self._any.add(subscription)
            else:
                for key in subscription.keys:
                    self._keyed.setdefault(key, set()).add(subscription)

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription.keys is None:
                self._any.discard(subscription)
                return
            for key in subscription.keys:
                waiting = self._keyed.get(key)
                if waiting is not None:
                    waiting.discard(subscription)
                    if not waiting:
                        del self._keyed[key]

    def dispatch(self, payload: str) -> None:
        with self._lock:
            woken = [*self._any, *self._keyed.get(payload, ())]
        for subscription in woken:
            subscription.wake()

    def wake_all(self) -> None:
        with self._lock:
            woken = [*self._any, *(s for group in self._keyed.values() for s in group)]
        for subscription in woken:
            subscription.wake()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                for payload in self._payloads():
                    self.dispatch(payload)
            except Exception:
                logger.warning(
                    "Notification listener %s lost its connection", self.channel, exc_info=True
                )
            self.connected.clear()
            # Anything may have happened meanwhile: every waiter looks for itself.
            self.wake_all()
            self.stopping.wait(_RECONNECT_S)

    def _on_connected(self) -> None:
        self.connected.set()
        # Events of before the connection were missed: waiters read the truth once more.
        self.wake_all()

    def _payloads(self) -> Iterator[str]:
        if self.backend == POSTGRES:
            yield from self._postgres()
        elif self.backend == REDIS:
            yield from self._redis()
        else:
            yield from self._local()

    def _postgres(self) -> Iterator[str]:
        import psycopg
        from psycopg import sql

        with psycopg.connect(**self.params, autocommit=True) as listening:
            listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.name_on_backend)))
            self._on_connected()
            while not self.stopping.is_set():
                for note in listening.notifies(timeout=_READ_S):
                    yield note.payload

    def _redis(self) -> Iterator[str]:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=None)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.name_on_backend)
            self._on_connected()
            while not self.stopping.is_set():
                message = pubsub.get_message(timeout=_READ_S)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    yield data.decode() if isinstance(data, bytes) else str(data)
        finally:
            pubsub.close()
            client.close()

    def _local(self) -> Iterator[str]:
        directory = self.local_directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"{os.getpid()}-{threading.get_ident()}.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(str(path))
            receiver.settimeout(_READ_S)
            self._on_connected()
            try:
                while not self.stopping.is_set():
                    try:
                        data = receiver.recv(1024)
                    except TimeoutError:
                        continue
                    yield data.decode()
            finally:
                with contextlib.suppress(OSError):
                    path.unlink()


_listeners: dict[str, _Listener] = {}
_listeners_lock = threading.Lock()


def _listener(channel: str, backend: str) -> _Listener:
    with _listeners_lock:
        listener = _listeners.get(channel)
        if listener is None or not listener.is_alive():
            listener = _Listener(channel, backend)
            listener.start()
            _listeners[channel] = listener
        return listener


@contextlib.contextmanager
def subscribe(channel: str, keys: Iterable[str] | None = None) -> Iterator[Subscription]:
    """Wake-ups on `channel` for the given payloads (any payload with `keys` None), from now
    on: subscribe before reading the state you wait on, so that no change falls in between.

    The subscription's `live` is False when notifications are off or their backend cannot be
    reached: poll as you would without them."""
    subscription = Subscription(None if keys is None else frozenset(str(key) for key in keys))
    backend = notify_backend()
    if backend == OFF:
        yield subscription
        return
    listener = _listener(channel, backend)
    listener.add(subscription)
    try:
        subscription.live = listener.connected.wait(_CONNECT_WAIT_S)
        # Woken by the connection itself, which only says "look once": the caller does anyway.
        subscription.wait(0)
        yield subscription
    finally:
        listener.remove(subscription)


def listeners_stop(*, timeout_s: float = 5.0) -> None:
    """Stop this process's listeners and close their connections (the test suite does, before
    it drops its database; a process that exits needs not: they are daemon threads)."""
    with _listeners_lock:
        stopping = list(_listeners.values())
        _listeners.clear()
    for listener in stopping:
        listener.stopping.set()
    for listener in stopping:
        listener.join(timeout_s)


def _forget_after_fork() -> None:
    # A forked child has the dicts but not the threads (nor a usable copy of their sockets).
    global _redis
    _listeners.clear()
    _redis = None


os.register_at_fork(after_in_child=_forget_after_fork)


def wait_until(
    predicate_read,
    *,
    channel: str,
    keys: Iterable[str] | None,
    timeout_s: float,
    fallback_s: float,
    poll_schedule: tuple[float, float, float],
):
    """Read with `predicate_read()` (returns (value, done)) until done or `timeout_s` passed,
    sleeping between reads until a notification on `channel` for `keys` arrives (at most
    `fallback_s`), or, without live notifications, by the polling schedule (first pause,
    growth, longest pause). Returns the last value read."""
    deadline = time.monotonic() + timeout_s
    first, growth, longest = poll_schedule
    pause = first
    with subscribe(channel, keys) as subscription:
        while True:
            value, done = predicate_read()
            remaining = deadline - time.monotonic()
            if done or remaining <= 0:
                return value
            if subscription.live:
                subscription.wait(min(fallback_s, remaining))
            else:
                time.sleep(min(pause, remaining))
                pause = min(pause * growth, longest)
