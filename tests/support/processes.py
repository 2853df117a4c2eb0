"""Stopping the child processes the tests start (clusters, servers)."""

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
