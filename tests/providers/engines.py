"""Deterministic engines of the tests' own, loaded by dotted path like an operator's engine."""

import threading

from dspy.lm15 import Message, Response, ServerError, Usage, response_to_events

from providers.engines import EngineConfig, request_messages


class ScriptedEngine:
    """Answers each field pre-fill from a fixed table and records every request it saw."""

    answers = {
        "answer:": " Paris",
        "sentiment:": " positive",
        "count:": " 3",
        "score:": " 0.5",
        "keywords:": " alpha, beta",
        "is_question:": " yes",
        "reasoning:": " it is known",
    }
    requests: list = []
    lock = threading.Lock()

    def __init__(self, *, config: EngineConfig) -> None:
        self.config = config

    def complete(self, request):
        messages, prefix = request_messages(request)
        with self.lock:
            type(self).requests.append((messages, prefix, request.config))
        field = prefix.rsplit("\n", 1)[-1]
        text = self.answers.get(field, " unknown")
        return Response(
            id=None,
            model=self.config.model,
            message=Message.assistant(text),
            finish_reason="stop",
            usage=Usage(input_tokens=len(str(messages)), output_tokens=len(text.split())),
        )

    def stream(self, request):
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        pass


class FailingEngine(ScriptedEngine):
    def complete(self, request):
        raise ServerError("the backend is down", provider=self.config.name)


class NotAnEngine:
    def __init__(self, *, config: EngineConfig) -> None:
        self.config = config

    def complete(self, request):
        raise NotImplementedError


class NoConfigEngine(ScriptedEngine):
    def __init__(self) -> None:
        pass


NOT_A_CLASS = "a string"
