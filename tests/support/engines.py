"""The tests' deterministic engines, loaded by dotted path like an operator's custom engine
(`ProviderFactory(engine_path=ECHO_ENGINE)`): no model, no network.

They share one base, `DeterministicEngine`, which fulfils the engine contract of DSPy 3.4
(`complete`, `stream`, `close`) around a single method, `reply(request) -> text`.
"""

import os
import re
import threading
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import ClassVar

from dspy.lm15 import Message, Response, ServerError, Usage, response_to_events

from providers.engines import EngineConfig, request_messages

ECHO_ENGINE = "tests.support.engines.EchoEngine"
SCRIPTED_ENGINE = "tests.support.engines.ScriptedEngine"
BROKEN_ENGINE = "tests.support.engines.BrokenEngine"
SLOW_ENGINE = "tests.support.engines.SlowEngine"
COUNTING_ENGINE = "tests.support.engines.CountingEngine"
FLAKY_ENGINE = "tests.support.engines.FlakyEngine"
NUL_ENGINE = "tests.support.engines.NulEngine"
LEAKY_ENGINE = "tests.support.engines.LeakyEngine"

# Every deterministic engine reports this many input tokens, and one output token a word.
INPUT_TOKENS = 7


class DeterministicEngine:
    """The engine contract around `reply`; subclasses say what the backend answers."""

    def __init__(self, *, config: EngineConfig) -> None:
        self.config = config

    def reply(self, request) -> str:
        raise NotImplementedError

    def complete(self, request) -> Response:
        text = self.reply(request)
        return Response(
            id=None,
            model=self.config.model,
            message=Message.assistant(text),
            finish_reason="stop",
            usage=Usage(input_tokens=INPUT_TOKENS, output_tokens=len(text.split())),
        )

    def stream(self, request):
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        pass


class EchoEngine(DeterministicEngine):
    """Answers ` Paris` to any request (7 input tokens, 1 output token)."""

    def reply(self, request) -> str:
        return " Paris"


class ScriptedEngine(DeterministicEngine):
    """Answers each compact-adapter field pre-fill from a fixed table, and records every request
    it saw as `(messages, prefix, config)` in `ScriptedEngine.requests` (emptied before each test
    by an autouse fixture of tests/support/fixtures.py)."""

    answers: ClassVar[dict[str, str]] = {
        "answer:": " Paris",
        "sentiment:": " positive",
        "count:": " 3",
        "score:": " 0.5",
        "keywords:": " alpha, beta",
        "is_question:": " yes",
        "reasoning:": " it is known",
    }
    requests: ClassVar[list] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def reset(cls) -> None:
        cls.requests = []

    def reply(self, request) -> str:
        messages, prefix = request_messages(request)
        with self.lock:
            ScriptedEngine.requests.append((messages, prefix, request.config))
        field = prefix.rsplit("\n", 1)[-1]
        return self.answers.get(field, " unknown")


class NulEngine(DeterministicEngine):
    """Answers with a NUL character inside, as a model may generate one."""

    def reply(self, request) -> str:
        return " Pa\x00ris"


class BrokenEngine(DeterministicEngine):
    """A backend that answers every request with a server error."""

    def reply(self, request) -> str:
        raise ServerError("the backend is down", provider=self.config.name)


class LeakyEngine(DeterministicEngine):
    """A backend whose failures quote the provider's API key (read from `api_key_env`, as a
    careless engine would): in the error's text, in the traceback of its cause, and, when the
    provider's `model` is `unexpected`, in an exception outside DSPy's error family."""

    def reply(self, request) -> str:
        key = os.environ[self.config.api_key_env]
        if self.config.model == "unexpected":
            raise PermissionError(f"token {key} was refused by the backend")
        try:
            raise RuntimeError(
                "Traceback (most recent call last):\n"
                f'  File "client.py", line 3, in send\n    headers={{"Authorization": "{key}"}}\n'
                f"ValueError: bad key {key}"
            )
        except RuntimeError as cause:
            raise ServerError(
                f"backend failed for Authorization={key}", provider=self.config.name
            ) from cause


class SlowEngine(EchoEngine):
    """Blocks until the file named by the provider's `model` exists (then answers), so a test
    can hold an execution in `running` for as long as it needs, e.g. to kill its worker."""

    def reply(self, request) -> str:
        marker = Path(self.config.model)
        # Tells the test which process to kill.
        marker.with_suffix(".started").write_text(str(os.getpid()))
        while not marker.exists():
            time.sleep(0.05)
        return super().reply(request)


# Engines that count their calls across processes, for the fault tests -------------------------

CALL_MARKER = re.compile(r"call-[0-9a-f]{12}")


def call_marker() -> str:
    """A word to put in an execution's input, so that the counting engines can tell whose
    request each call was (`CALL_MARKER`)."""
    return f"call-{uuid.uuid4().hex[:12]}"


def engine_calls(log: Path) -> Counter:
    """How many calls the counting engines that log to `log` received, by call marker."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line)


class CountingEngine(EchoEngine):
    """Answers like `EchoEngine`, and appends `<call marker> <pid>` to the file named by the
    provider's `model` for each call (one short `O_APPEND` write: lines from several processes
    never mix), so that a test can count the calls every worker made. With the environment
    variable `COUNTING_ENGINE_DELAY_S` set in the worker, each call takes that long."""

    def reply(self, request) -> str:
        marker = self.record(request)
        delay = float(os.environ.get("COUNTING_ENGINE_DELAY_S") or 0)
        if delay:
            time.sleep(delay)
        return self.answer(marker)

    def record(self, request) -> str:
        messages, prefix = request_messages(request)
        found = CALL_MARKER.search(" ".join(m["content"] for m in messages) + prefix)
        marker = found.group(0) if found else "unmarked"
        descriptor = os.open(self.config.model, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, f"{marker} {os.getpid()}\n".encode())
        finally:
            os.close(descriptor)
        return marker

    def answer(self, marker: str) -> str:
        return " Paris"


class FlakyEngine(CountingEngine):
    """A `CountingEngine` whose backend fails 30% of the calls with a server error: the calls
    whose marker hashes below 30 out of 100 (`flaky_fails(marker)`), every time."""

    def answer(self, marker: str) -> str:
        if flaky_fails(marker):
            raise ServerError("the backend failed this call", provider=self.config.name)
        return " Paris"


def flaky_fails(marker: str) -> bool:
    return zlib.crc32(marker.encode()) % 100 < 30


# Engines that break the contract, for the validation tests ------------------------------------


class NotAnEngine:
    """Has `complete` but neither `stream` nor `close`."""

    def __init__(self, *, config: EngineConfig) -> None:
        self.config = config

    def complete(self, request):
        raise NotImplementedError


class NoConfigEngine(EchoEngine):
    """Cannot be built as `EngineClass(config=...)`."""

    def __init__(self) -> None:
        pass


NOT_A_CLASS = "a string"
