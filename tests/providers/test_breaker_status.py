"""A breaker read at a moment: the state the next call would find, computed without writing."""

from datetime import timedelta

import pytest

from providers import breakers, selectors
from providers.models import BreakerEvent, CircuitBreaker
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def provider(clock):
    provider = ProviderFactory(name="remote")
    breakers.breaker_get_or_create(provider=provider)
    # Opens after 2 calls at 50% failures; 30 s open; 2 trial calls.
    CircuitBreaker.objects.filter(provider=provider).update(
        minimum_calls=2, sliding_window_size=4, half_open_permitted_calls=2, slow_call_duration_s=5
    )
    return provider


def status(provider, clock):
    return selectors.provider_breaker_status(provider=provider, now=clock())


def open_breaker(provider, clock) -> None:
    breakers.breaker_record_failure(provider=provider, duration_s=0.1, now=clock)
    breakers.breaker_record_failure(provider=provider, duration_s=0.1, now=clock)


def test_a_provider_never_called_reads_closed_without_a_row(clock):
    provider = ProviderFactory(name="fresh")
    read = status(provider, clock)
    assert (read.state, read.effective_state, read.calls_in_window) == ("closed", "closed", 0)
    assert (read.failure_rate, read.slow_call_rate, read.last_transition) == (None, None, None)
    assert read.summary == "closed, no calls recorded"
    assert not CircuitBreaker.objects.filter(provider=provider).exists()


def test_rates_over_the_closed_window(provider, clock):
    breakers.breaker_record_success(provider=provider, duration_s=0.1, now=clock)
    breakers.breaker_record_success(provider=provider, duration_s=6.0, now=clock)
    breakers.breaker_record_success(provider=provider, duration_s=0.2, now=clock)
    read = status(provider, clock)
    assert (read.calls_in_window, read.failures_in_window) == (3, 0)
    assert read.failure_rate == 0.0
    assert read.slow_call_rate == pytest.approx(100 / 3)
    assert read.summary == "closed, 0 failed of 3 calls (0% failed, 33% slow)"


def test_open_reads_open_with_the_time_trials_resume(provider, clock):
    opened_at = clock()
    open_breaker(provider, clock)
    clock.advance(10)
    read = status(provider, clock)
    assert (read.state, read.effective_state, read.ready_for_trial) == ("open", "open", False)
    assert read.trials_resume_at == opened_at + timedelta(seconds=30)
    assert read.summary.startswith("open (trials resume at 2026-01-01 12:00:30 UTC)")
    assert read.last_transition.to_state == "open"
    assert read.last_transition.at == opened_at
    assert "failure rate 100%" in read.last_transition.reason


def test_open_past_its_wait_reads_ready_for_a_trial_and_writes_nothing(provider, clock):
    opened_at = clock()
    open_breaker(provider, clock)
    events = BreakerEvent.objects.count()
    clock.advance(31)
    read = status(provider, clock)
    assert (read.state, read.effective_state, read.ready_for_trial) == ("open", "half_open", True)
    assert read.trials_resume_at == opened_at + timedelta(seconds=30)
    assert read.summary.startswith("half_open (ready for a trial since 2026-01-01 12:00:30 UTC)")
    # Read only: the stored state moves with the next call, as before.
    assert CircuitBreaker.objects.get(provider=provider).state == "open"
    assert BreakerEvent.objects.count() == events
    assert breakers.breaker_acquire_permission(provider=provider, now=clock)
    assert CircuitBreaker.objects.get(provider=provider).state == "half_open"


def test_forced_open_never_reads_ready(provider, clock):
    breakers.breaker_force_open(provider=provider, now=clock)
    clock.advance(3600)
    read = status(provider, clock)
    assert (read.effective_state, read.forced, read.ready_for_trial) == ("open", True, False)
    assert read.trials_resume_at is None
    assert read.summary.startswith("open (forced), stays open until reset")


def test_half_open_counts_its_trial_calls_and_reads_open_when_they_are_lost(provider, clock):
    open_breaker(provider, clock)
    clock.advance(31)
    assert breakers.breaker_acquire_permission(provider=provider, now=clock)
    breakers.breaker_record_failure(provider=provider, duration_s=0.1, now=clock)
    read = status(provider, clock)
    assert (read.state, read.effective_state) == ("half_open", "half_open")
    assert (read.calls_in_window, read.failure_rate) == (1, 100.0)
    assert (read.half_open_permits_issued, read.half_open_permitted_calls) == (1, 2)
    # The second trial permit goes to a worker that dies holding it.
    assert breakers.breaker_acquire_permission(provider=provider, now=clock)
    clock.advance(301)
    read = status(provider, clock)
    assert (read.state, read.effective_state, read.ready_for_trial) == ("half_open", "open", False)
    assert "did not report back" in read.summary


def test_statuses_of_many_providers_in_one_query(provider, clock, django_assert_num_queries):
    others = [ProviderFactory(name=f"other-{index}") for index in range(3)]
    open_breaker(provider, clock)
    breakers.breaker_force_open(provider=others[0], now=clock)
    providers = [provider, *others]
    with django_assert_num_queries(1):
        statuses = selectors.provider_breaker_statuses(providers=providers, now=clock())
    assert [statuses[p.pk].effective_state for p in providers] == [
        "open",
        "open",
        "closed",
        "closed",
    ]
    assert statuses[others[0].pk].forced
    assert statuses[others[0].pk].last_transition.reason == "forced open by an operator"
    assert statuses[others[1].pk].last_transition is None
