"""The tests' deterministic engines, loaded by dotted path like an operator's custom engine
(`ProviderFactory(engine_path=ECHO_ENGINE)`): no model, no network.

They share one base, `DeterministicEngine`, which fulfils the engine contract of DSPy 3.4
(`complete`, `stream`, `close`) around a single method, `reply(request) -> text`.
"""

import os
import threading
import time
from pathlib import Path
from typing import ClassVar

from dspy.lm15 import Message, Response, ServerError, Usage, response_to_events

from providers.engines import EngineConfig, request_messages

ECHO_ENGINE = "tests.support.engines.EchoEngine"
SCRIPTED_ENGINE = "tests.support.engines.ScriptedEngine"
BROKEN_ENGINE = "tests.support.engines.BrokenEngine"
SLOW_ENGINE = "tests.support.engines.SlowEngine"

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


class BrokenEngine(DeterministicEngine):
    """A backend that answers every request with a server error."""

    def reply(self, request) -> str:
        raise ServerError("the backend is down", provider=self.config.name)


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
