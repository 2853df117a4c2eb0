"""Calling a provider: run a DSPy program on its LM, bracketed by its circuit breaker.

`provider_call` is the one way the rest of the toolkit calls a provider: it asks the breaker,
runs the program, reports the outcome to the breaker (or hands a trial permit back when the
outcome says nothing about the provider) and returns what happened, failures included.
`provider_route` says where a provider's calls should run (which cluster, how many together).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dspy
from django.conf import settings
from django.utils import timezone

from providers.breakers import (
    breaker_acquire_permission,
    breaker_counts_failure,
    breaker_record_failure,
    breaker_record_success,
    breaker_release_permission,
)
from providers.engines import collect_generation_stats
from providers.lms import provider_adapter, provider_build_lm
from providers.models import Provider

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class ProviderResult:
    outputs: dict[str, Any]
    input_tokens: int
    output_tokens: int
    peak_memory_mb: float | None
    duration_s: float
    applied_optimizations: tuple[str, ...]


CALL_OVERRIDES = ("temperature", "max_tokens", "top_p", "stop")


def provider_execute(
    *,
    provider: Provider,
    program: dspy.Module,
    inputs: dict[str, Any],
    config: dict[str, Any] | None = None,
) -> ProviderResult:
    """Run `program` on `inputs` with the provider's LM and adapter, in this thread's context.

    DSPy's `LMError` family and `AdapterParseError` propagate unchanged.
    """
    overrides = {key: value for key, value in (config or {}).items() if key in CALL_OVERRIDES}
    unknown = set(config or {}) - set(CALL_OVERRIDES)
    if unknown:
        raise ValueError(f"Unknown generation settings: {sorted(unknown)}")
    if "stop" in overrides and isinstance(overrides["stop"], str):
        overrides["stop"] = [overrides["stop"]]
    # A copy per call: its own history and settings, sharing the engine and loaded model.
    lm = provider_build_lm(provider=provider).copy(**overrides)
    adapter = provider_adapter(provider=provider)
    started = time.perf_counter()
    with (
        dspy.context(lm=lm, adapter=adapter),
        dspy.track_usage() as usage,
        collect_generation_stats() as stats,
    ):
        prediction = program(**inputs)
    duration_s = time.perf_counter() - started
    input_tokens = output_tokens = 0
    for entry in usage.get_total_tokens().values():
        input_tokens += entry.get("prompt_tokens") or 0
        output_tokens += entry.get("completion_tokens") or 0
    peaks = [item.peak_memory_mb for item in stats if item.peak_memory_mb is not None]
    applied: list[str] = []
    for item in stats:
        applied.extend(name for name in item.applied_optimizations if name not in applied)
    return ProviderResult(
        outputs=dict(prediction.items()),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
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
    """

    provider: Provider
    started_at: datetime
    duration_s: float = 0.0
    refused: bool = False
    result: ProviderResult | None = None
    error: BaseException | None = None
    counted_by_breaker: bool = False

    @property
    def succeeded(self) -> bool:
        return self.result is not None


def provider_call(
    *,
    provider: Provider,
    program: dspy.Module,
    inputs: dict[str, Any],
    config: dict[str, Any] | None = None,
    now: Clock = timezone.now,
) -> ProviderCall:
    """Call the provider once, guarded by its circuit breaker; never raises for the call's
    own failure (the returned `ProviderCall` carries it)."""
    started_at = now()
    if not breaker_acquire_permission(provider=provider, now=now):
        return ProviderCall(provider=provider, started_at=started_at, refused=True)
    clock = time.perf_counter()
    try:
        result = provider_execute(provider=provider, program=program, inputs=inputs, config=config)
    except Exception as error:
        duration_s = time.perf_counter() - clock
        counted = breaker_counts_failure(error)
        if counted:
            breaker_record_failure(provider=provider, duration_s=duration_s, now=now)
        else:
            breaker_release_permission(provider=provider)
        return ProviderCall(
            provider=provider,
            started_at=started_at,
            duration_s=duration_s,
            error=error,
            counted_by_breaker=counted,
        )
    duration_s = time.perf_counter() - clock
    breaker_record_success(provider=provider, duration_s=duration_s, now=now)
    return ProviderCall(
        provider=provider, started_at=started_at, duration_s=duration_s, result=result
    )


@dataclass(frozen=True)
class ProviderRoute:
    """Where a provider's calls run: the django-q2 cluster (None: the default one), and how
    many queued calls of it one worker should run together so they decode in one batch."""

    cluster: str | None
    batch_size: int


def provider_route(*, provider: Provider) -> ProviderRoute:
    """Local models run in the inference cluster, whose workers hold the model in memory and
    batch concurrent calls; every other kind runs in the default cluster, one call a task."""
    if provider.kind == Provider.Kind.MLX:
        return ProviderRoute(
            cluster=settings.Q_INFERENCE_CLUSTER,
            batch_size=max(settings.PROVIDERS_LOCAL_CONCURRENCY, 1),
        )
    return ProviderRoute(cluster=None, batch_size=1)
