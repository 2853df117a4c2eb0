"""The database circuit breaker: classification, transitions, operator actions."""

import dspy
import pytest

from providers import breakers
from providers.models import BreakerEvent, CircuitBreaker
from tests.support.factories import ProviderFactory


def _configure(provider, **fields) -> CircuitBreaker:
    breaker = breakers.breaker_get_or_create(provider=provider)
    CircuitBreaker.objects.filter(pk=breaker.pk).update(**fields)
    breaker.refresh_from_db()
    return breaker


def _call(provider, clock, *, failed: bool, duration_s: float = 0.1) -> bool:
    """One call through the breaker; returns whether it was admitted."""
    if not breakers.breaker_acquire_permission(provider=provider, now=clock):
        return False
    record = breakers.breaker_record_failure if failed else breakers.breaker_record_success
    record(provider=provider, duration_s=duration_s, now=clock)
    return True


def _state(provider) -> str:
    return CircuitBreaker.objects.get(provider=provider).state


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (dspy.LMTransportError("connection refused"), True),
        (dspy.LMTimeoutError("timed out"), True),
        (dspy.LMServerError("boom", status=500), True),
        (dspy.LMRateLimitError("slow down", status=429), True),
        (dspy.LMProviderError("bad gateway", status=502), True),
        (dspy.LMProviderError("request timeout", status=408), True),
        (TimeoutError("read timed out"), True),
        (ConnectionRefusedError("refused"), True),
        (dspy.LMAuthError("bad key", status=401), False),
        (dspy.ContextWindowExceededError(model="m"), False),
        (dspy.LMProviderError("bad request", status=400), False),
        (dspy.LMConfigurationError("no model"), False),
        (ValueError("invalid input"), False),
    ],
)
def test_which_failures_count(error, counted):
    assert breakers.breaker_counts_failure(error) is counted


def test_a_parse_failure_counts():
    signature = dspy.Signature("question -> answer")
    error = dspy.AdapterParseError(adapter_name="ChatAdapter", signature=signature, lm_response="?")
    assert breakers.breaker_counts_failure(error) is True


@pytest.mark.django_db
def test_the_breaker_is_created_lazily_and_closed():
    provider = ProviderFactory()
    assert not CircuitBreaker.objects.filter(provider=provider).exists()
    assert breakers.breaker_acquire_permission(provider=provider) is True
    assert _state(provider) == CircuitBreaker.State.CLOSED


@pytest.mark.django_db
def test_it_stays_closed_below_the_minimum_number_of_calls(clock):
    provider = ProviderFactory()
    _configure(provider, minimum_calls=5, sliding_window_size=10, failure_rate_threshold=50)
    for _ in range(4):
        assert _call(provider, clock, failed=True)
    assert _state(provider) == CircuitBreaker.State.CLOSED
    assert _call(provider, clock, failed=True)
    assert _state(provider) == CircuitBreaker.State.OPEN


@pytest.mark.django_db
def test_the_failure_rate_is_computed_over_the_sliding_window(clock):
    provider = ProviderFactory()
    _configure(provider, minimum_calls=4, sliding_window_size=4, failure_rate_threshold=50)
    # f s s s: 25%; then s f s f over the last four would be 50%.
    for failed in (True, False, False, False, False, True, False):
        _call(provider, clock, failed=failed)
    assert _state(provider) == CircuitBreaker.State.CLOSED
    assert CircuitBreaker.objects.get(provider=provider).window == ["s", "s", "f", "s"]
    _call(provider, clock, failed=True)
    assert _state(provider) == CircuitBreaker.State.OPEN


@pytest.mark.django_db
def test_trip_stay_open_half_open_and_close(clock):
    provider = ProviderFactory()
    _configure(
        provider,
        minimum_calls=2,
        sliding_window_size=2,
        open_duration_s=30,
        half_open_permitted_calls=2,
    )
    _call(provider, clock, failed=True)
    _call(provider, clock, failed=True)
    assert _state(provider) == CircuitBreaker.State.OPEN

    clock.advance(29)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is False
    assert _state(provider) == CircuitBreaker.State.OPEN

    clock.advance(1)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is True
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is True
    assert _state(provider) == CircuitBreaker.State.HALF_OPEN
    # Exactly the configured number of trial calls.
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is False

    breakers.breaker_record_success(provider=provider, duration_s=0.1, now=clock)
    assert _state(provider) == CircuitBreaker.State.HALF_OPEN
    breakers.breaker_record_success(provider=provider, duration_s=0.1, now=clock)
    assert _state(provider) == CircuitBreaker.State.CLOSED

    breaker = CircuitBreaker.objects.get(provider=provider)
    transitions = [
        (event.from_state, event.to_state) for event in breaker.events.order_by("at", "id")
    ]
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert "failure rate 100%" in breaker.events.order_by("at", "id").first().reason


@pytest.mark.django_db
def test_failed_trial_calls_open_it_again(clock):
    provider = ProviderFactory()
    _configure(provider, minimum_calls=1, open_duration_s=10, half_open_permitted_calls=2)
    _call(provider, clock, failed=True)
    clock.advance(10)
    assert _call(provider, clock, failed=False)
    assert _call(provider, clock, failed=True)
    breaker = CircuitBreaker.objects.get(provider=provider)
    assert breaker.state == CircuitBreaker.State.OPEN
    assert breaker.state_changed_at == clock()
    assert breaker.events.first().reason.startswith("trial calls: failure rate 50%")


@pytest.mark.django_db
def test_slow_calls_open_the_breaker(clock):
    provider = ProviderFactory()
    _configure(
        provider,
        minimum_calls=3,
        sliding_window_size=3,
        slow_call_duration_s=2.0,
        slow_call_rate_threshold=60,
    )
    _call(provider, clock, failed=False, duration_s=2.5)
    _call(provider, clock, failed=False, duration_s=0.1)
    assert _state(provider) == CircuitBreaker.State.CLOSED
    _call(provider, clock, failed=False, duration_s=2.0)
    assert _state(provider) == CircuitBreaker.State.OPEN
    assert "slow-call rate 67%" in BreakerEvent.objects.get().reason


@pytest.mark.django_db
def test_released_trial_permits_can_be_taken_again(clock):
    provider = ProviderFactory()
    _configure(provider, minimum_calls=1, open_duration_s=0, half_open_permitted_calls=1)
    _call(provider, clock, failed=True)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is True
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is False
    breakers.breaker_release_permission(provider=provider)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is True


@pytest.mark.django_db
def test_lost_trial_calls_reopen_it_after_the_maximum_wait(clock):
    provider = ProviderFactory()
    _configure(
        provider,
        minimum_calls=1,
        open_duration_s=5,
        half_open_permitted_calls=1,
        half_open_max_wait_s=60,
    )
    _call(provider, clock, failed=True)
    clock.advance(5)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is True
    # The worker holding the only permit died: nothing ever reports back.
    clock.advance(60)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is False
    assert _state(provider) == CircuitBreaker.State.OPEN
    clock.advance(5)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is True


@pytest.mark.django_db
def test_forced_open_stays_open_until_reset(clock):
    provider = ProviderFactory()
    _configure(provider, open_duration_s=1)
    breakers.breaker_force_open(provider=provider, reason="maintenance", now=clock)
    clock.advance(3600)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is False
    breaker = CircuitBreaker.objects.get(provider=provider)
    assert (breaker.state, breaker.forced) == (CircuitBreaker.State.OPEN, True)

    breakers.breaker_reset(provider=provider, now=clock)
    breaker.refresh_from_db()
    assert (breaker.state, breaker.forced, breaker.window) == ("closed", False, [])
    assert breakers.breaker_acquire_permission(provider=provider, now=clock) is True
    reasons = list(breaker.events.order_by("at", "id").values_list("reason", flat=True))
    assert reasons == ["maintenance", "reset by an operator"]


@pytest.mark.django_db
def test_outcomes_reported_while_open_are_ignored(clock):
    provider = ProviderFactory()
    _configure(provider, minimum_calls=1)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock)
    _call(provider, clock, failed=True)
    breakers.breaker_record_success(provider=provider, duration_s=0.1, now=clock)
    breaker = CircuitBreaker.objects.get(provider=provider)
    assert breaker.state == CircuitBreaker.State.OPEN
    assert breaker.window == []
