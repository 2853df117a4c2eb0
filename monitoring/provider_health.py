"""A provider's health as an operator reads it: its breaker now, and its recent calls.

The breaker's status comes from providers (`provider_breaker_statuses`, computed at read
time); the call figures come from the executions' attempt rows, which providers cannot read
(executions sits above it), so the two meet here. Everything is read, nothing is written.

The call figures cover the attempts started within the window, at most the most recent
`MONITORING_PROVIDER_HEALTH_MAX_CALLS` of them per provider, so a busy provider costs one
bounded query like a quiet one. Latency is over the calls made (succeeded or failed); calls
the open breaker refused are counted apart (`rejected`), as nothing was called. The last
error is the most recent failed call whatever its age, with the message the toolkit wrote
for clients (never what the provider said, which may echo credentials).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Window
from django.db.models.functions import RowNumber

from executions.models import AttemptOutcome, ExecutionAttempt
from providers.breakers import BreakerStatus
from providers.models import Provider
from providers.selectors import provider_breaker_statuses


@dataclass(frozen=True)
class LastError:
    at: datetime
    code: str
    message: str


@dataclass(frozen=True)
class CallStats:
    """The provider's attempts started since `since` (see the module's docstring)."""

    since: datetime
    calls: int
    failed: int
    rejected: int
    slow: int
    error_rate: float | None
    slow_call_rate: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    # Whether more calls were made in the window than the figures cover.
    sampled: bool


@dataclass(frozen=True)
class ProviderHealth:
    provider: str
    enabled: bool
    breaker: BreakerStatus
    calls: CallStats
    last_error: LastError | None
    as_of: datetime


def provider_health(*, provider: Provider, window: timedelta, now: datetime) -> ProviderHealth:
    return provider_health_list(providers=[provider], window=window, now=now)[provider.pk]


def provider_health_list(
    *, providers: Iterable[Provider], window: timedelta, now: datetime
) -> dict[int, ProviderHealth]:
    """The health of each provider, by provider id, in three queries whatever their number."""
    providers = list(providers)
    since = now - window
    breakers = provider_breaker_statuses(providers=providers, now=now)
    limit = settings.MONITORING_PROVIDER_HEALTH_MAX_CALLS
    recent = (
        ExecutionAttempt.objects.filter(provider__in=providers, started_at__gte=since)
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("provider_id")], order_by=F("started_at").desc()
            )
        )
        # One past the limit tells whether the window held more.
        .filter(rank__lte=limit + 1)
        .values_list("provider_id", "outcome", "duration_s")
    )
    attempts: dict[int, list[tuple[str, float]]] = {provider.pk: [] for provider in providers}
    for provider_id, outcome, duration_s in recent:
        attempts[provider_id].append((outcome, duration_s))
    last_errors = (
        ExecutionAttempt.objects.filter(provider__in=providers, outcome=AttemptOutcome.FAILED)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("provider_id")],
                order_by=[F("started_at").desc(), F("id").desc()],
            )
        )
        .filter(rank=1)
        .values_list("provider_id", "started_at", "error_code", "error_message")
    )
    errors = {
        provider_id: LastError(at=at, code=code, message=message)
        for provider_id, at, code, message in last_errors
    }
    return {
        provider.pk: ProviderHealth(
            provider=provider.name,
            enabled=provider.enabled,
            breaker=breakers[provider.pk],
            calls=_call_stats(
                attempts[provider.pk],
                since=since,
                limit=limit,
                slow_s=breakers[provider.pk].slow_call_duration_s,
            ),
            last_error=errors.get(provider.pk),
            as_of=now,
        )
        for provider in providers
    }


def provider_health_window() -> timedelta:
    return timedelta(seconds=settings.MONITORING_PROVIDER_HEALTH_WINDOW_S)


def _call_stats(
    attempts: list[tuple[str, float]], *, since: datetime, limit: int, slow_s: float
) -> CallStats:
    sampled = len(attempts) > limit
    attempts = attempts[:limit]
    made = sorted(duration for outcome, duration in attempts if outcome != AttemptOutcome.REJECTED)
    failed = sum(1 for outcome, _ in attempts if outcome == AttemptOutcome.FAILED)
    slow = sum(1 for duration in made if duration >= slow_s)
    return CallStats(
        since=since,
        calls=len(made),
        failed=failed,
        rejected=len(attempts) - len(made),
        slow=slow,
        error_rate=100.0 * failed / len(made) if made else None,
        slow_call_rate=100.0 * slow / len(made) if made else None,
        latency_p50_s=_percentile(made, 0.50),
        latency_p95_s=_percentile(made, 0.95),
        latency_p99_s=_percentile(made, 0.99),
        sampled=sampled,
    )


def _percentile(ordered: list[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks (PostgreSQL's `percentile_cont`)."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)
