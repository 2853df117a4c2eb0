"""gunicorn's hooks for the web server `manage.py serve` starts (`--config python:config.gunicorn`);
its other settings are on serve's command line."""

from prometheus_client import multiprocess

from core import env


def child_exit(server, worker) -> None:
    # A worker that exited (killed, timed out, recycled) stops counting in the live gauges of
    # /metrics; its counters stay, so that totals never go down.
    directory = env.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        multiprocess.mark_process_dead(worker.pid, directory)
