"""Hypothesis drives the database breaker and a plain in-memory model of resilience4j side by
side, through random calls, outcomes, clock moves and operator actions; they must agree."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from providers import breakers
from providers.models import CircuitBreaker
from tests.support.factories import ProviderFactory


@dataclass
class Model:
    window_size: int
    minimum_calls: int
    failure_threshold: float
    slow_threshold: float
    slow_after_s: float
    open_s: float
    permitted: int
    max_wait_s: float
    state: str = "closed"
    forced: bool = False
    changed_at: float = 0.0
    window: list = field(default_factory=list)
    issued: int = 0
    trials: list = field(default_factory=list)

    def go(self, state: str, at: float) -> None:
        self.state, self.forced, self.changed_at = state, False, at
        self.window, self.issued, self.trials = [], 0, []

    def tripped(self, outcomes: list) -> bool:
        failures = sum(1 for failed, _ in outcomes if failed)
        slow = sum(1 for _, is_slow in outcomes if is_slow)
        return (
            100 * failures / len(outcomes) >= self.failure_threshold
            or 100 * slow / len(outcomes) >= self.slow_threshold
        )

    def acquire(self, at: float) -> bool:
        if self.state == "open" and not self.forced and at >= self.changed_at + self.open_s:
            self.go("half_open", at)
        elif (
            self.state == "half_open"
            and self.issued >= self.permitted
            and at >= self.changed_at + self.max_wait_s
        ):
            self.go("open", at)
        if self.state == "closed":
            return True
        if self.state == "half_open" and self.issued < self.permitted:
            self.issued += 1
            return True
        return False

    def record(self, *, failed: bool, duration_s: float, at: float) -> None:
        outcome = (failed, duration_s >= self.slow_after_s)
        if self.state == "closed":
            self.window = [*self.window, outcome][-self.window_size :]
            if len(self.window) >= self.minimum_calls and self.tripped(self.window):
                self.go("open", at)
        elif self.state == "half_open":
            self.trials.append(outcome)
            if len(self.trials) >= self.permitted:
                self.go("open" if self.tripped(self.trials) else "closed", at)

    def release(self) -> None:
        if self.state == "half_open" and self.issued > len(self.trials):
            self.issued -= 1


class BreakerMachine(RuleBasedStateMachine):
    start = datetime(2026, 1, 1, tzinfo=UTC)

    @initialize(
        window_size=st.integers(1, 5),
        minimum_calls=st.integers(1, 5),
        failure_threshold=st.sampled_from([25.0, 50.0, 100.0]),
        slow_threshold=st.sampled_from([50.0, 100.0]),
        open_s=st.sampled_from([0.0, 10.0, 30.0]),
        permitted=st.integers(1, 3),
    )
    def setup(
        self, window_size, minimum_calls, failure_threshold, slow_threshold, open_s, permitted
    ):
        self.elapsed = 0.0
        self.outstanding = 0
        self.provider = ProviderFactory()
        breaker = breakers.breaker_get_or_create(provider=self.provider)
        config = {
            "sliding_window_size": window_size,
            "minimum_calls": minimum_calls,
            "failure_rate_threshold": failure_threshold,
            "slow_call_rate_threshold": slow_threshold,
            "slow_call_duration_s": 5.0,
            "open_duration_s": open_s,
            "half_open_permitted_calls": permitted,
            "half_open_max_wait_s": 45.0,
            "state_changed_at": self.start,
        }
        CircuitBreaker.objects.filter(pk=breaker.pk).update(**config)
        self.model = Model(
            window_size=window_size,
            minimum_calls=minimum_calls,
            failure_threshold=failure_threshold,
            slow_threshold=slow_threshold,
            slow_after_s=5.0,
            open_s=open_s,
            permitted=permitted,
            max_wait_s=45.0,
        )

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    @rule()
    def acquire(self):
        admitted = breakers.breaker_acquire_permission(provider=self.provider, now=self.now)
        assert admitted == self.model.acquire(self.elapsed)
        self.outstanding += admitted

    @precondition(lambda self: self.outstanding > 0)
    @rule(failed=st.booleans(), duration_s=st.sampled_from([0.1, 5.0, 9.0]))
    def report(self, failed, duration_s):
        record = breakers.breaker_record_failure if failed else breakers.breaker_record_success
        record(provider=self.provider, duration_s=duration_s, now=self.now)
        self.model.record(failed=failed, duration_s=duration_s, at=self.elapsed)
        self.outstanding -= 1

    @precondition(lambda self: self.outstanding > 0)
    @rule()
    def release(self):
        breakers.breaker_release_permission(provider=self.provider)
        self.model.release()
        self.outstanding -= 1

    @rule(seconds=st.sampled_from([1.0, 10.0, 30.0, 50.0]))
    def wait(self, seconds):
        self.elapsed += seconds

    @rule()
    def force_open(self):
        breakers.breaker_force_open(provider=self.provider, now=self.now)
        if not (self.model.state == "open" and self.model.forced):
            self.model.go("open", self.elapsed)
            self.model.forced = True

    @rule()
    def reset(self):
        breakers.breaker_reset(provider=self.provider, now=self.now)
        self.model.go("closed", self.elapsed)

    @invariant()
    def agrees_with_the_model(self):
        if not hasattr(self, "model"):
            return
        breaker = CircuitBreaker.objects.get(provider=self.provider)
        model = self.model
        assert breaker.state == model.state
        assert breaker.forced == model.forced
        assert breaker.state_changed_at == self.start + timedelta(seconds=model.changed_at)
        assert len(breaker.window) == len(model.window) <= model.window_size
        assert breaker.half_open_permits_issued == model.issued <= model.permitted
        assert len(breaker.half_open_outcomes) == len(model.trials)


@pytest.mark.django_db
def test_the_breaker_behaves_like_the_model():
    run_state_machine_as_test(
        BreakerMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
