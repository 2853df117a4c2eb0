"""Heartbeats of service processes, written the way a real process writes its own
(`monitoring.processes.service_process_report`), for tests that need a cluster to look alive
without starting one."""

import itertools
import os
from datetime import datetime

from django.utils import timezone

from monitoring.models import ProcessRole
from monitoring.processes import ProcessIdentity, service_process_report

# Made-up pids beyond any real one, so no row collides with a reporting test process.
_pids = itertools.count(10_000_000)


def report_process(
    *,
    role: str = ProcessRole.WORKER,
    cluster: str = "default",
    at: datetime | None = None,
    rss_bytes: int | None = 64 * 2**20,
    loaded_models: list[dict] | None = None,
    host: str = "test-host",
) -> ProcessIdentity:
    """One heartbeat of a new process (a worker of the `default` cluster unless told), now
    or `at`."""
    moment = at or timezone.now()
    identity = ProcessIdentity(
        host=host,
        pid=next(_pids) + os.getpid(),
        started_at=moment,
        role=role,
        cluster="" if role == ProcessRole.WEB else cluster,
    )
    service_process_report(
        identity=identity, now=moment, rss_bytes=rss_bytes, loaded_models=loaded_models or []
    )
    return identity
