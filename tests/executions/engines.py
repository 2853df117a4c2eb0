"""Deterministic engines of the executions tests, loaded by dotted path like an operator's."""

import os
import time
from pathlib import Path

from dspy.lm15 import Message, Response, ServerError, Usage, response_to_events

from providers.engines import EngineConfig


class EchoEngine:
    """Answers `Paris` to any request and reports fixed token counts."""

    answer = " Paris"

    def __init__(self, *, config: EngineConfig) -> None:
        self.config = config

    def complete(self, request):
        return Response(
            id=None,
            model=self.config.model,
            message=Message.assistant(self.answer),
            finish_reason="stop",
            usage=Usage(input_tokens=7, output_tokens=1),
        )

    def stream(self, request):
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        pass


class BrokenEngine(EchoEngine):
    """A backend that answers every request with a server error."""

    def complete(self, request):
        raise ServerError("the backend is down", provider=self.config.name)


class SlowEngine(EchoEngine):
    """Blocks until the file named by the provider's `model` exists (then answers), so a test
    can hold an execution in `running` for as long as it needs, e.g. to kill its worker."""

    def complete(self, request):
        marker = Path(self.config.model)
        # Tells the test which process to kill.
        marker.with_suffix(".started").write_text(str(os.getpid()))
        while not marker.exists():
            time.sleep(0.05)
        return super().complete(request)
