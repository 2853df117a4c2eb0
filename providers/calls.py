"""Calling a provider: run a DSPy program on its LM, bracketed by its circuit breaker.

`provider_call` is the one way the rest of the toolkit calls a provider: it asks the breaker,
runs the program, reports the outcome to the breaker (or hands a trial permit back when the
outcome says nothing about the provider) and returns what happened, failures included.
`provider_route` says where a provider's calls should run (which cluster, how many together).
"""

import dataclasses
import re
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dspy
from django.conf import settings
from django.db.models import Q, Subquery
from django.utils import timezone
from dspy.utils.callback import BaseCallback
from dspy.utils.exceptions import AdapterParseError, LMUnexpectedError

from core.generation import GENERATION_SETTINGS
from core.secrets import known_secrets, redact, scrub
from providers.breakers import (
    breaker_admit_call,
    breaker_counts_failure,
    breaker_record_failure,
    breaker_record_success,
    breaker_release_permission,
)
from providers.engines import collect_generation_stats
from providers.exceptions import LMMalformedResponseError
from providers.lms import provider_adapter, provider_api_key, provider_build_lm
from providers.models import CircuitBreaker, Provider, ProviderPoolMember
from providers.pools import pool_release, pool_select_member

Clock = Callable[[], datetime]

# The failure log keeps a call's prompt, raw output and traceback; a long prompt (many demos)
# or a rambling model must not make one row megabytes long.
TRACE_TEXT_MAX_CHARS = 20_000


@dataclass(frozen=True)
class ProviderResult:
    outputs: dict[str, Any]
    input_tokens: int
    output_tokens: int
    peak_memory_mb: float | None
    duration_s: float
    applied_optimizations: tuple[str, ...]


@dataclass
class CallTrace:
    """What went over the wire during one provider call, filled in as it happens, so that it is
    known when the call fails too: the messages of each LM call, what the model wrote back,
    and the tokens the LM reported (a parse failure has used them all the same). Raw: the
    prompt carries the request's inputs and either side may carry a secret; `provider_call`
    scrubs it before anything else sees it."""

    messages: list[list[dict[str, Any]]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0


class _TraceRecorder(BaseCallback):
    """Records each LM call made inside `provider_execute` into its `CallTrace` (every LM call,
    also those of an adapter that asks field by field or retries with another format)."""

    def __init__(self, trace: CallTrace) -> None:
        self.trace = trace

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        messages = inputs.get("messages")
        if messages is None and inputs.get("prompt") is not None:
            messages = [{"role": "user", "content": inputs["prompt"]}]
        self.trace.messages.append(list(messages or []))

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        for output in outputs or []:
            text = output.get("text") if isinstance(output, dict) else output
            self.trace.outputs.append("" if text is None else str(text))


def provider_execute(
    *,
    provider: Provider,
    program: dspy.Module,
    inputs: dict[str, Any],
    config: dict[str, Any] | None = None,
    trace: CallTrace | None = None,
) -> ProviderResult:
    """Run `program` on `inputs` with the provider's LM and adapter, in this thread's context.

    DSPy's `LMError` family and `AdapterParseError` propagate unchanged; `trace`, when given,
    holds what the call sent and received and its tokens either way.
    """
    trace = trace if trace is not None else CallTrace()
    overrides = {key: value for key, value in (config or {}).items() if key in GENERATION_SETTINGS}
    unknown = set(config or {}) - set(GENERATION_SETTINGS)
    if unknown:
        raise ValueError(f"Unknown generation settings: {sorted(unknown)}")
    if "stop" in overrides and isinstance(overrides["stop"], str):
        overrides["stop"] = [overrides["stop"]]
    # A copy per call: its own history and settings, sharing the engine and loaded model.
    lm = provider_build_lm(provider=provider).copy(**overrides)
    adapter = provider_adapter(provider=provider)
    callbacks = [*(dspy.settings.get("callbacks") or []), _TraceRecorder(trace)]
    started = time.perf_counter()
    with (
        dspy.context(lm=lm, adapter=adapter, callbacks=callbacks),
        dspy.track_usage() as usage,
        collect_generation_stats() as stats,
    ):
        try:
            prediction = program(**inputs)
        finally:
            # The LM reports usage per call, so a call whose answer could not be parsed has
            # its tokens counted here before the error goes on.
            for entry in usage.get_total_tokens().values():
                trace.input_tokens += entry.get("prompt_tokens") or 0
                trace.output_tokens += entry.get("completion_tokens") or 0
    duration_s = time.perf_counter() - started
    peaks = [item.peak_memory_mb for item in stats if item.peak_memory_mb is not None]
    applied: list[str] = []
    for item in stats:
        applied.extend(name for name in item.applied_optimizations if name not in applied)
    # An endpoint that echoes the request into its answer must not hand the key to clients.
    outputs = _scrubbed(dict(prediction.items()), provider_secrets(provider=provider))
    return ProviderResult(
        outputs=outputs,
        input_tokens=trace.input_tokens,
        output_tokens=trace.output_tokens,
        peak_memory_mb=max(peaks) if peaks else None,
        duration_s=duration_s,
        applied_optimizations=tuple(applied),
    )


@dataclass(frozen=True)
class ProviderCall:
    """What one guarded call of a provider came to.

    Exactly one of three: `refused` (its breaker is open: nothing was called), `result` (it
    answered), or `error` (it raised; `counted_by_breaker` says whether the error counted
    against the provider's health, which is also whether another provider could do better).

    A failure is described three ways, for three readers: `error_code` (stable, for
    programs), `public_message` (written by the toolkit from the error's class and HTTP status,
    for API clients: never upstream text) and `detail` (what the error and its causes said,
    scrubbed of the provider's key and anything that looks like a credential, for staff).
    `error` itself holds the raw text: never store or show it.

    For the failure log (staff only), scrubbed the same way and cut at `TRACE_TEXT_MAX_CHARS`,
    a failed call also carries `prompt` (the messages sent, as readable text), `raw_output`
    (what the model wrote) and `traceback`; every call carries the tokens the LM reported (a
    failed call's too) and `breaker_state`, the provider's breaker state when the call was
    admitted or refused.

    A call of a pool is a call of one of its members: `provider` is the member that served it
    and `pool` the pool; a pool none of whose members could take the call is `refused` with
    `provider` the pool itself.
    """

    provider: Provider
    started_at: datetime
    duration_s: float = 0.0
    refused: bool = False
    result: ProviderResult | None = None
    error: BaseException | None = None
    counted_by_breaker: bool = False
    error_code: str = ""
    public_message: str = ""
    detail: str = ""
    prompt: str = ""
    raw_output: str = ""
    traceback: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    breaker_state: str = ""
    pool: Provider | None = None

    @property
    def succeeded(self) -> bool:
        return self.result is not None


_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def provider_error_code(error: BaseException) -> str:
    """The error's stable code: its class's (DSPy's `default_code`, an application error's
    `code`), never a value the upstream sent; `provider_error` when the class has none."""
    for attribute in ("default_code", "code"):
        code = getattr(type(error), attribute, None)
        if isinstance(code, str) and _CODE.match(code):
            return code
    return "provider_error"


def _http_status(error: BaseException) -> int | None:
    status = getattr(error, "status", None)
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    return status if isinstance(status, int) and 100 <= status <= 599 else None


def _status_text(status: int | None) -> str:
    if status is None:
        return ""
    kind = "server error" if status >= 500 else "client error" if status >= 400 else "response"
    return f" HTTP {status} ({kind})"


def provider_error_public_message(*, provider: Provider, error: BaseException) -> str:
    """A message about the failure written by the toolkit alone, from the error's class and
    HTTP status: safe to return to API clients whatever the upstream said."""
    name = provider.name
    status = _http_status(error)
    if isinstance(error, dspy.LMTimeoutError | TimeoutError):
        return f"The provider {name} did not answer within its timeout ({provider.timeout_s:g} s)."
    if isinstance(error, dspy.LMTransportError | ConnectionError):
        return f"The provider {name} could not be reached."
    if isinstance(error, dspy.LMAuthError):
        if status is None:
            return f"The provider {name} has no usable API key on this server."
        return f"The provider {name} refused the toolkit's credentials (HTTP {status})."
    if isinstance(error, dspy.LMRateLimitError):
        return f"The provider {name} is limiting the toolkit's requests (HTTP {status or 429})."
    if isinstance(error, dspy.ContextWindowExceededError):
        return f"The request does not fit the context window of the provider {name}'s model."
    if isinstance(error, LMMalformedResponseError):
        return f"The provider {name} answered with a body that is not the JSON it promised."
    if isinstance(error, AdapterParseError):
        return (
            f"The answer of the provider {name}'s model could not be read as the signature's "
            "output fields."
        )
    if status is not None:
        return f"The provider {name} answered{_status_text(status)}."
    if isinstance(error, dspy.LMServerError):
        return f"The provider {name} failed (server error)."
    if isinstance(error, dspy.LMError) and not isinstance(error, LMUnexpectedError):
        return f"The call to the provider {name} failed ({provider_error_code(error)})."
    return f"The provider {name} failed with an unexpected error."


def _chain(error: BaseException) -> list[BaseException]:
    seen: set[int] = set()
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {str(error).strip()}"
    facts = [
        f"{label} {value}"
        for label, value in (
            ("HTTP status", getattr(error, "status", None)),
            ("provider code", getattr(error, "provider_code", None)),
            ("request id", getattr(error, "request_id", None)),
        )
        if value not in (None, "")
    ]
    return f"{text} ({'; '.join(facts)})" if facts else text


def provider_secrets(*, provider: Provider) -> list[str]:
    """What must never appear in text about this provider: its own API key, and every other
    secret the toolkit holds (`core.secrets.known_secrets`)."""
    return [provider_api_key(provider=provider) or "", *known_secrets()]


def provider_error_detail(*, provider: Provider, error: BaseException) -> str:
    """What the error and each of its causes said, scrubbed: for staff (the admin, logs)."""
    texts: list[str] = []
    for item in _chain(error):
        text = _error_text(item)
        if text not in texts:
            texts.append(text)
    return scrub("\ncaused by ".join(texts), secrets=provider_secrets(provider=provider))


def _bounded(text: str, secrets: list[str]) -> str:
    # Scrubbed before it is cut, so that no half of a secret escapes the patterns.
    text = scrub(text, secrets=secrets)
    if len(text) <= TRACE_TEXT_MAX_CHARS:
        return text
    cut = len(text) - TRACE_TEXT_MAX_CHARS
    return f"{text[:TRACE_TEXT_MAX_CHARS]}\n[... cut: {cut} more characters not kept]"


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        # Multi-part content: its text parts (other parts, such as images, are named only).
        return "\n".join(
            str(part.get("text", "")) if part.get("type") == "text" else f"[{part.get('type')}]"
            for part in content
            if isinstance(part, dict)
        )
    return "" if content is None else str(content)


def provider_trace_texts(*, provider: Provider, trace: CallTrace) -> dict[str, str]:
    """The trace's prompt and raw output as readable text, scrubbed and bounded: one block a
    role per message, and one section a call when the call made several."""
    secrets = provider_secrets(provider=provider)
    several = len(trace.messages) > 1 or len(trace.outputs) > 1
    prompts = []
    for number, messages in enumerate(trace.messages, start=1):
        text = "\n\n".join(
            f"[{message.get('role', '?')}]\n{_content_text(message.get('content'))}"
            for message in messages
        )
        prompts.append(f"--- LM call {number} ---\n{text}" if several else text)
    outputs = [
        f"--- LM call {number} ---\n{text}" if several else text
        for number, text in enumerate(trace.outputs, start=1)
    ]
    return {
        "prompt": _bounded("\n\n".join(prompts), secrets),
        "raw_output": _bounded("\n\n".join(outputs), secrets),
    }


def _scrubbed(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets=secrets)
    if isinstance(value, list | tuple):
        return type(value)(_scrubbed(item, secrets) for item in value)
    if isinstance(value, dict):
        return {key: _scrubbed(item, secrets) for key, item in value.items()}
    return value


def provider_call(
    *,
    provider: Provider,
    program: dspy.Module,
    inputs: dict[str, Any],
    config: dict[str, Any] | None = None,
    now: Clock = timezone.now,
    keep_trace: bool = False,
    exclude_members: Collection[int] = (),
) -> ProviderCall:
    """Call the provider once, guarded by its circuit breaker; never raises for the call's
    own failure (the returned `ProviderCall` carries it). A failed call always carries its
    prompt and raw output; a successful one only with `keep_trace` (they cost a copy of every
    prompt).

    A pool calls one member, picked by `pool_select_member` (leaving out `exclude_members`,
    provider ids: those that already failed this request); a caller that moves on after a
    counted failure calls the pool again with that member excluded, until the pool refuses."""
    started_at = now()
    if provider.kind == Provider.Kind.POOL:
        lease = pool_select_member(pool=provider, now=now, exclude=exclude_members)
        if lease is None:
            return ProviderCall(
                provider=provider,
                pool=provider,
                started_at=started_at,
                refused=True,
                error_code="circuit_open",
                public_message=(
                    f"No member of the pool {provider.name} can take the call: their circuit "
                    "breakers are open, or they failed already."
                ),
                breaker_state=CircuitBreaker.State.OPEN,
            )
        try:
            call = _admitted_call(
                provider=lease.member,
                program=program,
                inputs=inputs,
                config=config,
                now=now,
                keep_trace=keep_trace,
                started_at=started_at,
                breaker_state=lease.breaker_state,
            )
        finally:
            pool_release(lease=lease)
        return dataclasses.replace(call, pool=provider)
    admitted_as = breaker_admit_call(provider=provider, now=now)
    if admitted_as is None:
        return ProviderCall(
            provider=provider,
            started_at=started_at,
            refused=True,
            error_code="circuit_open",
            public_message=f"The circuit breaker of {provider.name} is open.",
            breaker_state=CircuitBreaker.State.OPEN,
        )
    return _admitted_call(
        provider=provider,
        program=program,
        inputs=inputs,
        config=config,
        now=now,
        keep_trace=keep_trace,
        started_at=started_at,
        breaker_state=admitted_as,
    )


def _admitted_call(
    *,
    provider: Provider,
    program: dspy.Module,
    inputs: dict[str, Any],
    config: dict[str, Any] | None,
    now: Clock,
    keep_trace: bool,
    started_at: datetime,
    breaker_state: str,
) -> ProviderCall:
    """The call of a provider whose breaker admitted it in `breaker_state` (closed, or
    half-open for a trial call), reported to the breaker."""
    trace = CallTrace()
    clock = time.perf_counter()
    try:
        result = provider_execute(
            provider=provider, program=program, inputs=inputs, config=config, trace=trace
        )
    except Exception as error:
        duration_s = time.perf_counter() - clock
        counted = breaker_counts_failure(error)
        if counted:
            breaker_record_failure(provider=provider, duration_s=duration_s, now=now)
        else:
            breaker_release_permission(provider=provider)
        secrets = provider_secrets(provider=provider)
        return ProviderCall(
            provider=provider,
            started_at=started_at,
            duration_s=duration_s,
            error=error,
            counted_by_breaker=counted,
            error_code=provider_error_code(error),
            public_message=provider_error_public_message(provider=provider, error=error),
            detail=provider_error_detail(provider=provider, error=error),
            traceback=_bounded("".join(traceback.format_exception(error)), secrets),
            input_tokens=trace.input_tokens,
            output_tokens=trace.output_tokens,
            breaker_state=breaker_state,
            **provider_trace_texts(provider=provider, trace=trace),
        )
    duration_s = time.perf_counter() - clock
    breaker_record_success(provider=provider, duration_s=duration_s, now=now)
    return ProviderCall(
        provider=provider,
        started_at=started_at,
        duration_s=duration_s,
        result=result,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        breaker_state=breaker_state,
        **(provider_trace_texts(provider=provider, trace=trace) if keep_trace else {}),
    )


@dataclass(frozen=True)
class ProviderRoute:
    """Where a provider's calls run: the django-q2 cluster (None: the default one), and how
    many queued calls of it one worker should run together so they decode in one batch."""

    cluster: str | None
    batch_size: int


def provider_route(*, provider: Provider) -> ProviderRoute:
    """Local models run in the inference cluster that serves them (the provider's
    `serving_cluster`, else the first configured), whose workers hold the model in memory and
    batch concurrent calls; every other kind runs in the default cluster, one call a task. A
    pool runs where its members do (they all run in one place: `provider_pool_errors`)."""
    if provider.kind == Provider.Kind.POOL:
        link = (
            ProviderPoolMember.objects.filter(pool_id=provider.pk).select_related("member").first()
            if provider.pk is not None
            else None
        )
        return provider_route(provider=link.member) if link else ProviderRoute(None, 1)
    if provider.kind == Provider.Kind.MLX:
        return ProviderRoute(
            cluster=provider.serving_cluster or settings.Q_INFERENCE_CLUSTER,
            batch_size=max(settings.PROVIDERS_LOCAL_CONCURRENCY, 1),
        )
    return ProviderRoute(cluster=None, batch_size=1)


def providers_routed_to(*, cluster: str | None) -> Q:
    """The providers whose calls run in `cluster` (None: the default one), as a filter on
    Provider; the same rule as `provider_route`."""
    local = Q(kind=Provider.Kind.MLX)
    if cluster is None:
        return ~local & ~_pools_of(local)
    served = Q(serving_cluster=cluster)
    if cluster == settings.Q_INFERENCE_CLUSTER:
        served |= Q(serving_cluster="")
    return (local & served) | _pools_of(local & served)


def _pools_of(members: Q) -> Q:
    """The pools with members matching `members`: a pool runs where its members do."""
    links = ProviderPoolMember.objects.filter(member__in=Provider.objects.filter(members))
    return Q(kind=Provider.Kind.POOL, pk__in=Subquery(links.values("pool_id")))


def providers_routed_with(*, provider: Provider) -> Q:
    """The providers whose calls share `provider`'s cluster (its queue), as a filter on
    Provider."""
    return providers_routed_to(cluster=provider_route(provider=provider).cluster)
