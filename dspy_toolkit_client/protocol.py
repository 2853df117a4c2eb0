"""What the sync and async clients share: the requests they send, how they read the answers,
and when a failed try is tried again. No I/O here, so both clients behave the same.
"""

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from dspy_toolkit_client.errors import (
    ConnectionFailed,
    ExecutionFailed,
    ExecutionTimeout,
    ToolkitError,
    error_from_body,
)
from dspy_toolkit_client.prediction import ToolkitPrediction

API_PREFIX = "/api/v1"
EXECUTE_PATH = f"{API_PREFIX}/dspy/execute"
BATCH_PATH = f"{API_PREFIX}/dspy/execute/batch"
FINISHED = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
# Failures of the transport alone. A POST is tried again after any of them, even one that may
# have reached the server (a read timeout, a connection dropped before the answer), because
# every POST carries an Idempotency-Key: the server answers a repeat with the execution the
# first try created instead of running it again.
RETRYABLE_TRANSPORT_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
# Statuses tried again only when the server says when (`Retry-After`): the queue is full, the
# client is over its share or rate, the database connection was lost.
RETRYABLE_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Options:
    """The knobs of one client, shared by every call it makes."""

    timeout: float
    connect_timeout: float
    max_retries: int
    backoff_s: float
    wait_s: float
    batch_size: int
    # The read timeout beyond the time the server was asked to wait.
    read_margin_s: float = 10.0
    max_poll_interval_s: float = 2.0


@dataclass
class Deadline:
    """The end of one call: every wait, retry and poll of it stops there."""

    seconds: float
    ends_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.ends_at = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self.ends_at - time.monotonic()


@dataclass(frozen=True)
class Call:
    """One HTTP request of the client, as both transports send it."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    idempotency_key: str | None = None
    # How long the server may take to answer: a sync execute waits for the execution.
    server_wait_s: float = 0.0

    def headers(self) -> dict[str, str]:
        return {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}

    def timeout(self, options: Options) -> httpx.Timeout:
        return httpx.Timeout(
            options.read_margin_s + self.server_wait_s, connect=options.connect_timeout
        )


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def server_wait(options: Options, deadline: Deadline) -> float:
    """How long a sync request asks the server to wait (its `timeout_s`): never past the
    call's deadline, never more than `wait_s` (the rest is polled)."""
    remaining = deadline.remaining()
    if remaining <= 0:
        raise ExecutionTimeout("The call's timeout passed before it was sent.", code="timeout")
    # The server refuses 0; a call this close to its end asks for the shortest wait.
    return max(round(min(options.wait_s, remaining), 3), 0.001)


def batch_call(
    *, options: Options, deadline: Deadline, items: list[dict[str, Any]], idempotency_key: str
) -> Call:
    """One `execute/batch` request of a chunk of items, the server waiting as `server_wait`."""
    wait = server_wait(options, deadline)
    return Call(
        "POST",
        BATCH_PATH,
        json={"items": items, "mode": "sync", "timeout_s": wait},
        idempotency_key=idempotency_key,
        server_wait_s=wait,
    )


def item_body(
    *,
    signature: str,
    inputs: Mapping[str, Any],
    version: int | str | None,
    provider: str | None,
    config: Mapping[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"signature": signature, "inputs": dict(inputs)}
    if version is not None:
        body["version"] = version
    if provider is not None:
        body["provider"] = provider
    if config:
        body["config"] = dict(config)
    return body


def execution_path(execution_id: str) -> str:
    return f"{API_PREFIX}/executions/{execution_id}"


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        # An HTTP date, or nothing: the API always sends seconds.
        return None


def error_from_response(response: httpx.Response) -> ToolkitError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_body(body, status=response.status_code, retry_after=retry_after(response))


def transport_retry_delay(
    *, attempt: int, error: Exception, options: Options, deadline: Deadline
) -> float:
    """The pause before trying again after a transport failure, or the exception to raise."""
    delay = options.backoff_s * 2**attempt
    if attempt >= options.max_retries or delay >= deadline.remaining():
        raise ConnectionFailed(
            f"The server could not be reached ({type(error).__name__}) after {attempt + 1} tries.",
            code="connection_failed",
        ) from error
    return delay


def status_retry_delay(
    *, attempt: int, response: httpx.Response, options: Options, deadline: Deadline
) -> float | None:
    """The pause the server asked for before trying again, or None when this answer is final
    (retries used up, no `Retry-After`, or a pause that would end past the deadline)."""
    if response.status_code not in RETRYABLE_STATUSES or attempt >= options.max_retries:
        return None
    delay = retry_after(response)
    if delay is None or delay >= deadline.remaining():
        return None
    return delay


def poll_delays(options: Options) -> Iterator[float]:
    """Pauses between polls of a running execution: quick at first, then every
    `max_poll_interval_s`."""
    delay = 0.05
    while True:
        yield delay
        delay = min(delay * 2, options.max_poll_interval_s)


def is_finished(execution: Mapping[str, Any]) -> bool:
    return execution.get("status") in FINISHED


def prediction(execution: Mapping[str, Any]) -> ToolkitPrediction:
    """The finished execution as a prediction, or its failure as `ExecutionFailed`."""
    if execution["status"] == "succeeded":
        return ToolkitPrediction.from_execution(execution)
    error = execution.get("error") or {}
    raise ExecutionFailed(
        error.get("message") or f"The execution ended {execution['status']}.",
        code=error.get("code") or execution["status"],
        cause=error.get("cause"),
        execution_id=execution["id"],
    )


def timed_out(execution_id: str | None) -> ExecutionTimeout:
    where = f" Execution {execution_id} may still finish." if execution_id else ""
    return ExecutionTimeout(
        f"The call's timeout passed before the execution finished.{where}",
        code="timeout",
        execution_id=execution_id,
    )


def batch_outcome(item: Mapping[str, Any]) -> ToolkitError | dict[str, Any]:
    """One item of a batch answer: its execution (maybe still running), or its error."""
    if "execution" in item:
        return item["execution"]
    return error_from_body(item.get("error"), status=int(item.get("status") or 400))
