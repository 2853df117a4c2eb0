"""The breaker's lock-free paths: calls that change nothing read the breaker row and write
nothing, and every outcome that changes the breaker is still recorded under its lock."""

import threading

import dspy
import pytest
from django.db import connections, transaction

from providers import breakers
from providers.calls import provider_call
from providers.models import CircuitBreaker
from tests.support.factories import ProviderFactory

WINDOW = 4


def _configure(provider, **fields) -> CircuitBreaker:
    breaker = breakers.breaker_get_or_create(provider=provider)
    CircuitBreaker.objects.filter(pk=breaker.pk).update(**fields)
    breaker.refresh_from_db()
    return breaker


def _window(provider) -> list[str]:
    return CircuitBreaker.objects.get(provider=provider).window


def _state(provider) -> str:
    return CircuitBreaker.objects.get(provider=provider).state


def _succeed(provider, clock, *, duration_s: float = 0.1) -> None:
    assert breakers.breaker_admit_call(provider=provider, now=clock) == "closed"
    breakers.breaker_record_success(provider=provider, duration_s=duration_s, now=clock)


def _fail(provider, clock) -> None:
    assert breakers.breaker_admit_call(provider=provider, now=clock) == "closed"
    breakers.breaker_record_failure(provider=provider, duration_s=0.1, now=clock)


@pytest.fixture
def healthy_provider(db, clock):
    """A provider whose closed breaker's window is full of plain successes."""
    provider = ProviderFactory(name="healthy")
    _configure(provider, sliding_window_size=WINDOW, minimum_calls=WINDOW)
    for _ in range(WINDOW):
        _succeed(provider, clock)
    assert _window(provider) == ["s"] * WINDOW
    return provider


@pytest.mark.django_db
def test_a_healthy_providers_call_reads_its_breaker_twice_and_locks_nothing(
    healthy_provider, django_assert_max_num_queries
):
    program = dspy.Predict("question -> answer")
    with django_assert_max_num_queries(2) as captured:
        call = provider_call(
            provider=healthy_provider, program=program, inputs={"question": "Capital of France?"}
        )
    assert call.succeeded, call.detail
    assert call.breaker_state == "closed"
    statements = [query["sql"] for query in captured.captured_queries]
    assert all(sql.startswith("SELECT") for sql in statements), statements
    assert not any("FOR UPDATE" in sql for sql in statements), statements
    assert _window(healthy_provider) == ["s"] * WINDOW


@pytest.mark.django_db
def test_an_open_breaker_refuses_without_a_lock(clock, django_assert_max_num_queries):
    provider = ProviderFactory(name="down")
    breakers.breaker_force_open(provider=provider, now=clock)
    program = dspy.Predict("question -> answer")
    with django_assert_max_num_queries(1) as captured:
        call = provider_call(provider=provider, program=program, inputs={"question": "?"})
    assert call.refused
    assert not any("FOR UPDATE" in query["sql"] for query in captured.captured_queries)


@pytest.mark.django_db
def test_a_half_open_breaker_with_every_permit_taken_refuses_without_a_lock(
    clock, django_assert_max_num_queries
):
    provider = ProviderFactory(name="trialled")
    _configure(provider, minimum_calls=1, open_duration_s=10, half_open_permitted_calls=1)
    _fail(provider, clock)
    clock.advance(10)
    assert breakers.breaker_admit_call(provider=provider, now=clock) == "half_open"
    with django_assert_max_num_queries(1) as captured:
        assert breakers.breaker_admit_call(provider=provider, now=clock) is None
    assert not any("FOR UPDATE" in query["sql"] for query in captured.captured_queries)
    # The permit taken is still counted: its report closes the breaker.
    breakers.breaker_record_success(provider=provider, duration_s=0.1, now=clock)
    assert _state(provider) == CircuitBreaker.State.CLOSED


@pytest.mark.django_db
def test_failures_after_a_window_of_successes_open_it_at_the_threshold(healthy_provider, clock):
    _configure(healthy_provider, failure_rate_threshold=50)
    # More successes on the full window: not written, and nothing is lost by it.
    for _ in range(3):
        _succeed(healthy_provider, clock)
    _fail(healthy_provider, clock)
    assert _window(healthy_provider) == ["s", "s", "s", "f"]
    assert _state(healthy_provider) == CircuitBreaker.State.CLOSED
    _fail(healthy_provider, clock)
    assert _state(healthy_provider) == CircuitBreaker.State.OPEN
    assert (
        "failure rate 50%"
        in CircuitBreaker.objects.get(provider=healthy_provider)
        .events.get(to_state=CircuitBreaker.State.OPEN)
        .reason
    )


@pytest.mark.django_db
def test_successes_that_push_a_failure_out_of_the_window_are_recorded(healthy_provider, clock):
    _fail(healthy_provider, clock)
    expected = ["s", "s", "s", "f"]
    for _ in range(WINDOW):
        _succeed(healthy_provider, clock)
        expected = [*expected, "s"][-WINDOW:]
        assert _window(healthy_provider) == expected
    assert expected == ["s"] * WINDOW


@pytest.mark.django_db
def test_a_slow_success_on_a_window_of_successes_is_recorded_and_can_open_it(
    healthy_provider, clock
):
    _configure(healthy_provider, slow_call_duration_s=2.0, slow_call_rate_threshold=50)
    _succeed(healthy_provider, clock, duration_s=2.0)
    assert _window(healthy_provider) == ["s", "s", "s", "S"]
    _succeed(healthy_provider, clock, duration_s=1.9)
    assert _window(healthy_provider) == ["s", "s", "S", "s"]
    _succeed(healthy_provider, clock, duration_s=2.5)
    assert _state(healthy_provider) == CircuitBreaker.State.OPEN


@pytest.mark.django_db
def test_a_success_in_a_window_not_yet_full_is_recorded(clock):
    provider = ProviderFactory(name="new")
    _configure(provider, sliding_window_size=WINDOW)
    for count in range(1, WINDOW + 1):
        _succeed(provider, clock)
        assert _window(provider) == ["s"] * count


@pytest.mark.django_db(transaction=True)
def test_a_healthy_providers_call_goes_through_while_another_process_holds_the_row_lock(
    clock,
):
    provider = ProviderFactory(name="contended")
    _configure(provider, sliding_window_size=WINDOW, minimum_calls=WINDOW)
    for _ in range(WINDOW):
        _succeed(provider, clock)
    locked, released = threading.Event(), threading.Event()
    outcome: dict[str, bool] = {}

    def hold_the_lock() -> None:
        # Another connection, as another worker's locked write would be.
        try:
            with transaction.atomic():
                CircuitBreaker.objects.select_for_update().get(provider=provider)
                locked.set()
                # Waits for the call below; only a call that waited for this lock lets the
                # wait run out (the guard against a hung test, not a measure of speed).
                outcome["released_by_the_call"] = released.wait(timeout=60)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(timeout=60)
        assert breakers.breaker_admit_call(provider=provider, now=clock) == "closed"
        breakers.breaker_record_success(provider=provider, duration_s=0.1, now=clock)
    finally:
        released.set()
        holder.join()
    assert outcome["released_by_the_call"]
