"""`Toolkit` and `AsyncToolkit`: run the toolkit's registered signatures from any Python program.

    with Toolkit("http://127.0.0.1:8000", api_key) as toolkit:
        qa = toolkit.signature("qa", version="production")
        print(qa(question="What is the capital of France?").answer)

A call sends one sync execute request; when the server answers 202 (still running after the
wait it was asked for) the client polls the execution until it finishes or the call's
`timeout` passes. Connection failures, and 429/503 answers with `Retry-After`, are tried again
with the same `Idempotency-Key`, so a retry never runs the execution twice. Both classes behave
the same; the rules they share live in `protocol`.
"""

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from dspy_toolkit_client.errors import ToolkitError
from dspy_toolkit_client.prediction import ToolkitPrediction
from dspy_toolkit_client.protocol import (
    EXECUTE_PATH,
    RETRYABLE_TRANSPORT_ERRORS,
    Call,
    Deadline,
    Options,
    batch_call,
    batch_outcome,
    error_from_response,
    execution_path,
    is_finished,
    item_body,
    new_idempotency_key,
    poll_delays,
    prediction,
    server_wait,
    status_retry_delay,
    timed_out,
    transport_retry_delay,
)

Outcome = ToolkitError | dict[str, Any]


class _ClientBase:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        wait_s: float = 30.0,
        batch_size: int = 32,
    ) -> None:
        """`timeout`: how long one call (or batch) may take in all: queueing, running, polling
        and retries. `connect_timeout`: per connection. `max_retries`: tries after the first,
        after a connection failure (pausing `backoff_s`, doubled each time) or a 429/503 with
        `Retry-After` (pausing as long as it says). `wait_s`: how long one request asks the
        server to wait for the execution before it answers 202 and the client polls.
        `batch_size`: items per batch request (the server's `EXECUTIONS_BATCH_MAX_ITEMS`)."""
        if timeout <= 0 or wait_s <= 0 or batch_size < 1 or max_retries < 0:
            raise ValueError(
                "timeout and wait_s must be positive, batch_size at least 1, max_retries 0 or more."
            )
        self.base_url = base_url
        self._options = Options(
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            backoff_s=backoff_s,
            wait_s=wait_s,
            batch_size=batch_size,
        )
        self._headers = {"Authorization": f"Api-Key {api_key}", "Accept": "application/json"}

    def __repr__(self) -> str:
        # Never the API key.
        return f"{type(self).__name__}({self.base_url!r})"

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(timeout if timeout is not None else self._options.timeout)

    def _chunks(self, items: list[dict[str, Any]], key: str) -> list[tuple[str, list]]:
        size = self._options.batch_size
        chunks = [items[start : start + size] for start in range(0, len(items), size)]
        if len(chunks) == 1:
            return [(key, chunks[0])]
        # The server keys item `i` of a batch `<key>#<i>`; each chunk needs a key of its own.
        return [(f"{key}.{number}", chunk) for number, chunk in enumerate(chunks)]


class _SignatureBase:
    def __init__(
        self,
        name: str,
        *,
        version: int | str | None,
        provider: str | None,
        config: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> None:
        self.name = name
        self.version = version
        self.provider = provider
        self.config = dict(config or {})
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, version={self.version!r})"

    def _item(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return item_body(
            signature=self.name,
            inputs=inputs,
            version=self.version,
            provider=self.provider,
            config=self.config,
        )


class Toolkit(_ClientBase):
    """A client of one toolkit server; a context manager that closes its connections."""

    def __init__(self, base_url: str, api_key: str, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self._http = httpx.Client(base_url=base_url, headers=self._headers)

    def __enter__(self) -> "Toolkit":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def signature(
        self,
        name: str,
        *,
        version: int | str | None = None,
        provider: str | None = None,
        config: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> "RemoteSignature":
        """A callable for a registered signature. `version`: a number or an alias (omitted:
        `production` when set, else the latest); `provider`: omitted, the default one;
        `config`: `temperature`, `max_tokens`, `top_p`, `stop`; `timeout`: the client's."""
        return RemoteSignature(
            self, name, version=version, provider=provider, config=config, timeout=timeout
        )

    def wait(self, execution_id: str, *, timeout: float | None = None) -> ToolkitPrediction:
        """The prediction of an execution accepted earlier (after an `ExecutionTimeout`)."""
        deadline = self._deadline(timeout)
        execution = self._send(Call("GET", execution_path(execution_id)), deadline).json()
        return prediction(self._finished(execution, deadline))

    def _send(self, call: Call, deadline: Deadline) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    json=call.json,
                    headers=call.headers(),
                    timeout=call.timeout(self._options),
                )
            except RETRYABLE_TRANSPORT_ERRORS as error:
                time.sleep(
                    transport_retry_delay(
                        attempt=attempt, error=error, options=self._options, deadline=deadline
                    )
                )
            else:
                if response.is_success:
                    return response
                delay = status_retry_delay(
                    attempt=attempt, response=response, options=self._options, deadline=deadline
                )
                if delay is None:
                    raise error_from_response(response)
                time.sleep(delay)
            attempt += 1

    def _finished(self, execution: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        """The execution once it has finished, polled for as long as the deadline allows."""
        delays = poll_delays(self._options)
        try:
            while not is_finished(execution):
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise timed_out(execution["id"])
                time.sleep(min(next(delays), remaining))
                call = Call("GET", execution_path(execution["id"]))
                execution = self._send(call, deadline).json()
        except ToolkitError as error:
            error.execution_id = error.execution_id or execution["id"]
            raise
        return execution

    def _execute(
        self, item: dict[str, Any], *, timeout: float | None, idempotency_key: str | None
    ) -> ToolkitPrediction:
        deadline = self._deadline(timeout)
        wait = server_wait(self._options, deadline)
        call = Call(
            "POST",
            EXECUTE_PATH,
            json=item | {"mode": "sync", "timeout_s": wait},
            idempotency_key=idempotency_key or new_idempotency_key(),
            server_wait_s=wait,
        )
        execution = self._send(call, deadline).json()
        return prediction(self._finished(execution, deadline))

    def _batch(
        self,
        items: list[dict[str, Any]],
        *,
        timeout: float | None,
        idempotency_key: str | None,
        return_errors: bool,
    ) -> list[Any]:
        deadline = self._deadline(timeout)
        outcomes: list[Outcome] = []
        for key, chunk in self._chunks(items, idempotency_key or new_idempotency_key()):
            call = batch_call(
                options=self._options, deadline=deadline, items=chunk, idempotency_key=key
            )
            answer = self._send(call, deadline).json()
            outcomes += [batch_outcome(item) for item in sorted(answer["items"], key=_index)]
        results: list[Any] = []
        for index, outcome in enumerate(outcomes):
            try:
                if isinstance(outcome, ToolkitError):
                    raise outcome
                results.append(prediction(self._finished(outcome, deadline)))
            except ToolkitError as error:
                error.index = index
                if not return_errors:
                    raise
                results.append(error)
        return results


class RemoteSignature(_SignatureBase):
    """`signature(question=...)` runs it and returns a `ToolkitPrediction`."""

    def __init__(self, toolkit: Toolkit, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self._toolkit = toolkit

    def __call__(self, **inputs: Any) -> ToolkitPrediction:
        return self.call(inputs)

    def call(
        self,
        inputs: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> ToolkitPrediction:
        """Like calling the signature, with the inputs as one mapping and the request's own
        `idempotency_key` (say, to retry a call of an earlier process) or `timeout`."""
        return self._toolkit._execute(
            self._item(inputs),
            timeout=timeout if timeout is not None else self.timeout,
            idempotency_key=idempotency_key,
        )

    def batch(
        self,
        inputs: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        return_errors: bool = False,
    ) -> list[Any]:
        """One prediction per inputs, in order, through the batch endpoint (in requests of
        `batch_size` items). An item that fails raises its error, with `index` set; with
        `return_errors` the error takes the item's place in the list instead."""
        return self._toolkit._batch(
            [self._item(each) for each in inputs],
            timeout=timeout if timeout is not None else self.timeout,
            idempotency_key=idempotency_key,
            return_errors=return_errors,
        )


class AsyncToolkit(_ClientBase):
    """`Toolkit` for asyncio: the same calls, awaited; `async with` closes it."""

    def __init__(self, base_url: str, api_key: str, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self._http = httpx.AsyncClient(base_url=base_url, headers=self._headers)

    async def __aenter__(self) -> "AsyncToolkit":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    def signature(
        self,
        name: str,
        *,
        version: int | str | None = None,
        provider: str | None = None,
        config: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> "AsyncRemoteSignature":
        """As `Toolkit.signature`."""
        return AsyncRemoteSignature(
            self, name, version=version, provider=provider, config=config, timeout=timeout
        )

    async def wait(self, execution_id: str, *, timeout: float | None = None) -> ToolkitPrediction:
        deadline = self._deadline(timeout)
        response = await self._send(Call("GET", execution_path(execution_id)), deadline)
        return prediction(await self._finished(response.json(), deadline))

    async def _send(self, call: Call, deadline: Deadline) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    json=call.json,
                    headers=call.headers(),
                    timeout=call.timeout(self._options),
                )
            except RETRYABLE_TRANSPORT_ERRORS as error:
                await asyncio.sleep(
                    transport_retry_delay(
                        attempt=attempt, error=error, options=self._options, deadline=deadline
                    )
                )
            else:
                if response.is_success:
                    return response
                delay = status_retry_delay(
                    attempt=attempt, response=response, options=self._options, deadline=deadline
                )
                if delay is None:
                    raise error_from_response(response)
                await asyncio.sleep(delay)
            attempt += 1

    async def _finished(self, execution: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        delays = poll_delays(self._options)
        try:
            while not is_finished(execution):
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise timed_out(execution["id"])
                await asyncio.sleep(min(next(delays), remaining))
                call = Call("GET", execution_path(execution["id"]))
                execution = (await self._send(call, deadline)).json()
        except ToolkitError as error:
            error.execution_id = error.execution_id or execution["id"]
            raise
        return execution

    async def _execute(
        self, item: dict[str, Any], *, timeout: float | None, idempotency_key: str | None
    ) -> ToolkitPrediction:
        deadline = self._deadline(timeout)
        wait = server_wait(self._options, deadline)
        call = Call(
            "POST",
            EXECUTE_PATH,
            json=item | {"mode": "sync", "timeout_s": wait},
            idempotency_key=idempotency_key or new_idempotency_key(),
            server_wait_s=wait,
        )
        execution = (await self._send(call, deadline)).json()
        return prediction(await self._finished(execution, deadline))

    async def _outcome(self, outcome: Outcome, deadline: Deadline) -> ToolkitPrediction:
        if isinstance(outcome, ToolkitError):
            raise outcome
        return prediction(await self._finished(outcome, deadline))

    async def _batch(
        self,
        items: list[dict[str, Any]],
        *,
        timeout: float | None,
        idempotency_key: str | None,
        return_errors: bool,
    ) -> list[Any]:
        deadline = self._deadline(timeout)
        outcomes: list[Outcome] = []
        for key, chunk in self._chunks(items, idempotency_key or new_idempotency_key()):
            call = batch_call(
                options=self._options, deadline=deadline, items=chunk, idempotency_key=key
            )
            answer = (await self._send(call, deadline)).json()
            outcomes += [batch_outcome(item) for item in sorted(answer["items"], key=_index)]
        # Items still running are polled together.
        results = await asyncio.gather(
            *(self._outcome(outcome, deadline) for outcome in outcomes), return_exceptions=True
        )
        for index, result in enumerate(results):
            if isinstance(result, ToolkitError):
                result.index = index
                if not return_errors:
                    raise result
            elif isinstance(result, BaseException):
                raise result
        return results


class AsyncRemoteSignature(_SignatureBase):
    """`await signature(question=...)` (or `await signature.acall(...)`, as DSPy modules)."""

    def __init__(self, toolkit: AsyncToolkit, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self._toolkit = toolkit

    async def __call__(self, **inputs: Any) -> ToolkitPrediction:
        return await self.call(inputs)

    async def acall(self, **inputs: Any) -> ToolkitPrediction:
        return await self.call(inputs)

    async def call(
        self,
        inputs: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> ToolkitPrediction:
        """As `RemoteSignature.call`."""
        return await self._toolkit._execute(
            self._item(inputs),
            timeout=timeout if timeout is not None else self.timeout,
            idempotency_key=idempotency_key,
        )

    async def batch(
        self,
        inputs: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        return_errors: bool = False,
    ) -> list[Any]:
        """As `RemoteSignature.batch`; the items still running after the request are polled at
        once."""
        return await self._toolkit._batch(
            [self._item(each) for each in inputs],
            timeout=timeout if timeout is not None else self.timeout,
            idempotency_key=idempotency_key,
            return_errors=return_errors,
        )


def _index(item: Mapping[str, Any]) -> int:
    return item["index"]
