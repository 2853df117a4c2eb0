"""The benchmarks' fast engine: a `custom` provider's engine (`bench.fast_engine.FastEngine`)
that answers every output field of a ChatAdapter prompt with a fixed text, in microseconds, so
that what the service adds around a DSPy call is what a benchmark measures.

The service's processes import it by dotted path: `bench` is a namespace package found on their
`PYTHONPATH` (the checkout's root; bench/service.py puts this checkout's root there too, so an
earlier checkout under test finds it).
"""

import re
import threading

from dspy.lm15 import Message, Response, Usage, response_to_events

FAST_ENGINE = "bench.fast_engine.FastEngine"
ANSWER = "Paris"

_OUTPUT_FIELDS = re.compile(r"Your output fields are:\n(.*?)\nAll interactions", re.DOTALL)
_FIELD_NAME = re.compile(r"^\d+\. `(\w+)`", re.MULTILINE)
# Completions by system prompt: a benchmark sends a handful of distinct prompts, each many times.
_COMPLETIONS_KEPT = 64


def chat_completion(system: str) -> str:
    """The ChatAdapter answer to a prompt whose system message is `system`: each output field
    it names holds `ANSWER`, then the completion marker."""
    found = _OUTPUT_FIELDS.search(system)
    names = _FIELD_NAME.findall(found.group(1)) if found else ["answer"]
    fields = "".join(f"[[ ## {name} ## ]]\n{ANSWER}\n\n" for name in names)
    return fields + "[[ ## completed ## ]]"


class FastEngine:
    """The engine contract of DSPy 3.4 (`complete`, `stream`, `close`), with no model."""

    _completions: dict[str, str] = {}
    _lock = threading.Lock()

    def __init__(self, *, config) -> None:
        self.config = config

    def complete(self, request) -> Response:
        system = (
            request.system
            if isinstance(request.system, str)
            else "".join(getattr(part, "text", "") for part in request.system or ())
        )
        text = self._completions.get(system)
        if text is None:
            text = chat_completion(system)
            with self._lock:
                if len(self._completions) >= _COMPLETIONS_KEPT:
                    self._completions.clear()
                self._completions[system] = text
        return Response(
            id=None,
            model=self.config.model,
            message=Message.assistant(text),
            finish_reason="stop",
            usage=Usage(input_tokens=len(system) // 4, output_tokens=len(text) // 4),
        )

    def stream(self, request):
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        pass
