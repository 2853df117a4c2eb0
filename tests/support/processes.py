"""Stopping the child processes the tests start (clusters, servers)."""

import contextlib
import os
import signal
import subprocess


def stop(process: subprocess.Popen, *, timeout: float) -> None:
    """Ask the process to stop; kill it if it has not within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    """A process started in a session of its own led a group of the same id: whatever it forked
    and left behind (a cluster's sentinel and workers, still connected to the test database)
    goes too. For any other process there is no such group and nothing happens."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
