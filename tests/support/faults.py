"""Tools of the fault tests: what they break (database connections, processes), the reaper
they run meanwhile, and how they look at processes and wait. Everything stays on 127.0.0.1,
is bounded in time and stops itself.
"""

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
from django.db import DatabaseError, connection

from core.db import db_reconnect


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, every: float = 0.2):
    """`condition()`'s first truthy value, polled every `every` seconds for `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


# Processes ------------------------------------------------------------------------------------


def processes_in_session(session_id: int) -> list[int]:
    """The live processes of a session (a child started with `start_new_session=True` leads
    one whose id is its pid)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, session.
        if int(fields[3]) == session_id and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL a child and every process of its session at once, as a crash or the OOM killer
    would: nothing gets to clean up."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


# The database ---------------------------------------------------------------------------------


def database_url(settings_dict: dict, *, application_name: str) -> str:
    """A DATABASE_URL for child processes whose connections carry `application_name`, so that a
    `ConnectionKiller` finds them (and only them)."""
    return (
        f"postgres://{settings_dict['USER']}:{settings_dict.get('PASSWORD') or ''}@"
        f"{settings_dict['HOST']}:{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
        f"?application_name={application_name}"
    )


def _admin_connection(settings_dict: dict) -> psycopg.Connection:
    return psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"],
        password=settings_dict.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


def terminate_own_connection() -> None:
    """Have the server terminate this thread's database connection (`pg_terminate_backend`,
    waiting until the backend is gone): its next query fails as after a failover."""
    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    with _admin_connection(connection.settings_dict) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (backend,))


class ConnectionKiller:
    """Terminates, every `every_s` seconds from a thread of its own, each backend of `database`
    whose connection carries `application_name` (`pg_terminate_backend`, as a failover or an
    administrator would), until stopped. `kills` counts the connections it terminated."""

    def __init__(
        self, *, settings_dict: dict, application_name: str, every_s: float = 0.05
    ) -> None:
        self.settings_dict = settings_dict
        self.application_name = application_name
        self.every_s = every_s
        self.kills = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-killer", daemon=True)

    def __enter__(self) -> "ConnectionKiller":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with _admin_connection(self.settings_dict) as admin:
            while not self._stop.wait(self.every_s):
                row = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = %s AND pid <> pg_backend_pid()",
                    (self.settings_dict["NAME"], self.application_name),
                ).fetchone()
                self.kills += row[0]
                self.rounds += 1


@contextmanager
def reaper_running(*, every_s: float = 0.5) -> Iterator[list]:
    """Run the reaper service from a thread of the test process every `every_s` seconds (the
    schedule runs it once a minute; the tests want it sooner). Yields the list of its results."""
    from executions.services.reaper import execution_reap_stale

    results: list = []
    stop = threading.Event()

    def loop() -> None:
        try:
            while not stop.wait(every_s):
                try:
                    results.append(execution_reap_stale())
                except DatabaseError:
                    db_reconnect()
        finally:
            connection.close()

    thread = threading.Thread(target=loop, name="test-reaper", daemon=True)
    thread.start()
    try:
        yield results
    finally:
        stop.set()
        thread.join(timeout=30)
