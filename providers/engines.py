"""DSPy 3.4 engines (`dspy.LM(model, engine=...)`) for the providers that run in-process.

An engine makes exactly one attempt per request: the `dspy.LM` around it owns retries and
caching. Expected failures are raised as `dspy.lm15` errors, which `dspy.LM` turns into the
public `dspy.LMError` family (`LMServerError`, `LMConfigurationError`, ...).

A `custom` provider names an engine class by dotted path; it is instantiated as
`EngineClass(config=EngineConfig(...))` and must provide `complete(Request) -> Response`,
`stream(Request)` and `close()`, like `MLXEngine`.
"""

import contextlib
import contextvars
import importlib
import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.clients.engines.base import validate_request
from dspy.lm15 import (
    ConfigurationError,
    InvalidRequestError,
    Message,
    Request,
    Response,
    ServerError,
    Usage,
    response_to_events,
)

from providers.exceptions import LMMalformedResponseError

ENGINE_METHODS = ("complete", "stream", "close")


@dataclass(frozen=True)
class EngineConfig:
    """What an engine learns of its provider: never a secret, only an env var name."""

    name: str
    kind: str
    model: str
    max_tokens: int
    temperature: float
    top_p: float
    timeout_s: float
    hardware_optimization: bool
    model_path: str = ""
    base_url: str = ""
    api_key_env: str = ""


@dataclass(frozen=True)
class GenerationStats:
    """Figures of one local generation that DSPy's usage tracking does not carry.

    `cached_input_tokens` counts the input tokens that came from the runtime's prefix cache
    instead of being prefilled (`input_tokens` counts them too).
    """

    input_tokens: int
    output_tokens: int
    peak_memory_mb: float | None
    duration_s: float
    applied_optimizations: tuple[str, ...]
    cached_input_tokens: int = 0


_collector: contextvars.ContextVar[list[GenerationStats] | None] = contextvars.ContextVar(
    "providers_generation_stats", default=None
)


@contextlib.contextmanager
def collect_generation_stats() -> Iterator[list[GenerationStats]]:
    """Gather the stats of every local generation made in this context (this thread)."""
    stats: list[GenerationStats] = []
    token = _collector.set(stats)
    try:
        yield stats
    finally:
        _collector.reset(token)


def _record(stats: GenerationStats) -> None:
    collected = _collector.get()
    if collected is not None:
        collected.append(stats)


def request_messages(request: Request) -> tuple[list[dict[str, str]], str]:
    """Chat messages of a request, and the text of a trailing assistant turn to continue.

    An adapter that pre-fills the assistant turn (the compact adapter writes `answer:`) sends
    it as a final assistant message; the model continues that text instead of starting a new
    turn.
    """
    messages: list[dict[str, str]] = []
    if request.system is not None:
        system = (
            request.system
            if isinstance(request.system, str)
            else "".join(getattr(part, "text", "") for part in request.system)
        )
        messages.append({"role": "system", "content": system})
    messages.extend(
        {"role": message.role, "content": message.text or ""} for message in request.messages
    )
    assistant_prefix = ""
    if messages and messages[-1]["role"] == "assistant":
        assistant_prefix = messages.pop()["content"]
    return messages, assistant_prefix


class MLXEngine:
    """Runs requests on a local MLX model directory through the project's MLX runtime.

    The runtime loads each model once per process (lazily, thread-safe, shared between
    providers with the same directory) and batches concurrent calls, so an engine is cheap.
    """

    def __init__(self, *, config: EngineConfig) -> None:
        if not config.model_path:
            raise ValueError("MLXEngine needs EngineConfig.model_path")
        self.config = config

    def complete(self, request: Request) -> Response:
        validate_request(request)
        # Imported on first use: the runtime pulls in MLX, which worker processes must only
        # initialise after they fork.
        from providers.mlx.runtime import GenerationError, ModelLoadError, generate

        messages, assistant_prefix = request_messages(request)
        settings = request.config
        try:
            result = generate(
                model_path=self.config.model_path,
                messages=messages,
                assistant_prefix=assistant_prefix,
                max_tokens=settings.max_tokens or self.config.max_tokens,
                temperature=(
                    self.config.temperature
                    if settings.temperature is None
                    else settings.temperature
                ),
                top_p=self.config.top_p if settings.top_p is None else settings.top_p,
                stop=list(settings.stop) or None,
                optimize=self.config.hardware_optimization,
            )
        except ModelLoadError as exc:
            raise ConfigurationError(
                f"The model of provider {self.config.name!r} cannot be loaded: {exc}",
                provider=self.config.name,
            ) from exc
        except ValueError as exc:
            raise InvalidRequestError(str(exc), provider=self.config.name) from exc
        except (GenerationError, MemoryError) as exc:
            raise ServerError(
                f"Local generation failed on provider {self.config.name!r}: {exc}",
                provider=self.config.name,
            ) from exc
        _record(
            GenerationStats(
                input_tokens=result.prompt_tokens,
                output_tokens=result.completion_tokens,
                peak_memory_mb=result.peak_memory_mb,
                duration_s=result.duration_s,
                applied_optimizations=tuple(result.applied_optimizations),
                cached_input_tokens=result.cached_prompt_tokens,
            )
        )
        return Response(
            id=None,
            model=self.config.model,
            message=Message.assistant(result.text),
            finish_reason="length" if result.finish_reason == "length" else "stop",
            # As OpenAI reports a prompt cache: the input count includes the cached tokens.
            usage=Usage(
                input_tokens=result.prompt_tokens,
                output_tokens=result.completion_tokens,
                cache_read_tokens=result.cached_prompt_tokens,
            ),
            provider_data={
                "peak_memory_mb": result.peak_memory_mb,
                "cached_prompt_tokens": result.cached_prompt_tokens,
                "duration_s": result.duration_s,
                "applied_optimizations": list(result.applied_optimizations),
            },
        )

    def stream(self, request: Request) -> Iterator[Any]:
        # The runtime batches whole generations; a stream is the finished response's events.
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        """Nothing to release: loaded models belong to the process-wide runtime cache."""


def engine_class_import(path: str) -> type:
    """The class at a dotted path `package.module.ClassName` (or `package.module:ClassName`)."""
    module_name, separator, class_name = path.replace(":", ".").rpartition(".")
    if not separator or not module_name or not class_name:
        raise ImportError(f"{path!r} is not a dotted path such as 'package.module.EngineClass'.")
    module = importlib.import_module(module_name)
    try:
        found = getattr(module, class_name)
    except AttributeError:
        raise ImportError(f"Module {module_name!r} has no attribute {class_name!r}.") from None
    if not inspect.isclass(found):
        raise TypeError(f"{path!r} is not a class.")
    return found


def engine_contract_problems(engine_class: type) -> list[str]:
    """Why a class does not follow the engine contract (empty when it does)."""
    problems = [
        f"it has no {name}() method"
        for name in ENGINE_METHODS
        if not callable(getattr(engine_class, name, None))
    ]
    complete = getattr(engine_class, "complete", None)
    if callable(complete) and inspect.iscoroutinefunction(complete):
        problems.append("complete() must be synchronous")
    try:
        inspect.signature(engine_class).bind(config=None)
    except TypeError:
        problems.append("it cannot be instantiated as EngineClass(config=EngineConfig(...))")
    except ValueError:
        pass
    return problems


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def remote_error_precise(exc: dspy.LMError) -> dspy.LMError:
    """The precise error for two failures DSPy reports vaguely over HTTP.

    A read timeout comes out as `LMTransportError` and a body that is not JSON as a bare
    `LMProviderError`; breakers count slow calls and server faults apart from network
    failures, so they become `LMTimeoutError` and `LMMalformedResponseError`.
    """
    if isinstance(exc, dspy.LMTimeoutError | LMMalformedResponseError):
        return exc
    causes = list(_causes(exc))
    details = {"model": exc.model, "provider": exc.provider, "status": exc.status}
    if isinstance(exc, dspy.LMTransportError) and any(
        isinstance(cause, TimeoutError) for cause in causes
    ):
        return dspy.LMTimeoutError(exc.message, **details)
    if type(exc) is dspy.LMProviderError and any(
        isinstance(cause, json.JSONDecodeError) for cause in causes
    ):
        return LMMalformedResponseError(exc.message, **details)
    return exc


@contextlib.contextmanager
def _precise_remote_errors() -> Iterator[None]:
    try:
        yield
    except dspy.LMError as exc:
        precise = remote_error_precise(exc)
        if precise is exc:
            raise
        raise precise from exc


class OpenAICompatibleLM(dspy.LM):
    """`dspy.LM` for `openai` providers, raising precise errors (see `remote_error_precise`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with _precise_remote_errors():
            return super().__call__(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        with _precise_remote_errors():
            return await super().acall(*args, **kwargs)
