"""Services of the per-provider circuit breakers, whose state lives in the database.

Semantics follow resilience4j: a count-based sliding window of the last N calls while closed;
once at least `minimum_calls` are recorded, a failure rate or slow-call rate at or above its
threshold opens the breaker; after `open_duration_s` the next caller moves it to half-open,
where exactly `half_open_permitted_calls` trial calls are admitted; once all of them report,
their rates decide between closing and opening again. Every read-modify-write happens under
the breaker's row lock (`select_for_update`), so web and worker processes agree on one state
and half-open never admits more trial calls than configured.

Calls that change nothing take no lock and write nothing: every call of a provider reads its
one breaker row, and a lock on it would make all of them (every process's) wait in turn.
- Asking permission reads the row as last committed, with a plain SELECT. A closed breaker
  admits as it stands, and so does an open one refuse (its wait not yet over, or forced), and
  a half-open one whose trial permits are all taken (its wait for them not yet over). A
  transition another process makes meanwhile is then ordered after this answer: a valid serial
  order, so the guarantees stay those of the locked path. Only an answer that changes the row
  (a trial permit taken, an open whose wait is over, a half-open whose trials were lost) takes
  the lock, reading the row again under it, so the permits are still counted exactly.
- A plain success in a closed breaker whose window is full of plain successes would append
  `s` and drop an `s`: the same window, no rate above zero (thresholds are positive), no
  transition. It is read unlocked and not written at all, exactly as if it had been recorded
  just before any concurrent change. Any other outcome (a failure, a slow call, a window not
  yet full or holding a failure, half-open) keeps the locked read-modify-write, so counting
  stays exact: a success that pushes a failure out of the window is written.
- Handing a permit back matters only half-open with a permit out; otherwise it reads and stops.
A healthy provider's call thus costs two plain SELECTs on its breaker row instead of two
locked transactions (ten statements with their BEGIN and COMMIT). Not chosen: counters
aggregated on a schedule would open the breaker late, and an atomic UPDATE per call would
still write (and lock, briefly) the one row on every call.

Time comes from a `now` callable so tests drive transitions without sleeping.

The calls that bracket a provider call (permission, outcome) are retried after a lost
database connection (`core.db`): an outcome is worth recording once the call was made, even at
the small risk of counting it twice when the first try's commit went through unseen.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import dspy
from django.db import transaction
from django.utils import timezone

from core.db import db_retrying
from providers.events import BreakerStateChange, send_breaker_transitioned
from providers.models import BreakerEvent, CircuitBreaker, Provider

Clock = Callable[[], datetime]

SUCCESS, SLOW_SUCCESS, FAILURE, SLOW_FAILURE = "s", "S", "f", "F"

# Failures that say something about the provider's health. Everything else (invalid input,
# authentication, an over-long prompt, a misconfiguration) would fail on any healthy provider
# too, so it neither opens the breaker nor triggers a fallback.
_COUNTED_ERRORS: tuple[type[BaseException], ...] = (
    dspy.LMTransportError,
    dspy.LMTimeoutError,
    dspy.LMServerError,
    dspy.LMRateLimitError,
    dspy.AdapterParseError,
    TimeoutError,
    ConnectionError,
)
_NOT_COUNTED_ERRORS: tuple[type[BaseException], ...] = (
    dspy.LMAuthError,
    dspy.ContextWindowExceededError,
)


def breaker_counts_failure(error: BaseException) -> bool:
    """Whether a provider call that raised `error` counts as a failure of that provider."""
    if isinstance(error, _NOT_COUNTED_ERRORS):
        return False
    if isinstance(error, _COUNTED_ERRORS):
        return True
    # Any other provider response with an HTTP status: 5xx is the provider's fault, 408 and
    # 429 are load; the remaining 4xx are the request's.
    status = getattr(error, "status", None)
    if isinstance(error, dspy.LMError) and isinstance(status, int):
        return status >= 500 or status in (408, 429)
    return False


def breaker_get_or_create(*, provider: Provider) -> CircuitBreaker:
    """The provider's breaker, created closed with the default configuration on first use."""
    breaker, _ = CircuitBreaker.objects.get_or_create(provider=provider)
    return breaker


def _committed(provider: Provider) -> CircuitBreaker | None:
    """The provider's breaker as last committed, read without a lock; None before first use."""
    try:
        return CircuitBreaker.objects.get(provider=provider)
    except CircuitBreaker.DoesNotExist:
        return None


def _locked(provider: Provider) -> CircuitBreaker:
    """The provider's breaker, its row locked until the transaction ends (created if missing)."""
    try:
        breaker = CircuitBreaker.objects.select_for_update().get(provider=provider)
    except CircuitBreaker.DoesNotExist:
        breaker_get_or_create(provider=provider)
        breaker = CircuitBreaker.objects.select_for_update().get(provider=provider)
    # Spares a transition the query for the provider's name.
    breaker.provider = provider
    return breaker


def _transition(breaker: CircuitBreaker, *, to: str, reason: str, now: datetime) -> None:
    BreakerEvent.objects.create(
        breaker=breaker, from_state=breaker.state, to_state=to, reason=reason[:500], at=now
    )
    # Told once committed: a transition rolled back with its transaction never happened.
    change = BreakerStateChange(
        provider=breaker.provider.name, from_state=breaker.state, to_state=to
    )
    transaction.on_commit(lambda: send_breaker_transitioned(change))
    breaker.state = to
    breaker.forced = False
    breaker.state_changed_at = now
    # Each state starts with fresh metrics, as in resilience4j.
    breaker.window = []
    breaker.half_open_permits_issued = 0
    breaker.half_open_outcomes = []


STATE_FIELDS = [
    "state",
    "forced",
    "state_changed_at",
    "window",
    "half_open_permits_issued",
    "half_open_outcomes",
    "updated_at",
]


def _failures(outcomes: list[str]) -> int:
    return sum(1 for outcome in outcomes if outcome in (FAILURE, SLOW_FAILURE))


def breaker_window_failures(*, breaker: CircuitBreaker) -> int:
    """How many of the calls in the breaker's closed-state window failed."""
    return _failures(breaker.window)


def _rates(outcomes: list[str]) -> tuple[float, float]:
    total = len(outcomes)
    slow = sum(1 for outcome in outcomes if outcome in (SLOW_SUCCESS, SLOW_FAILURE))
    return 100.0 * _failures(outcomes) / total, 100.0 * slow / total


def _trip_reason(breaker: CircuitBreaker, outcomes: list[str]) -> str | None:
    failure_rate, slow_rate = _rates(outcomes)
    if failure_rate >= breaker.failure_rate_threshold:
        return (
            f"failure rate {failure_rate:.0f}% over the last {len(outcomes)} calls reached the "
            f"threshold of {breaker.failure_rate_threshold:g}%"
        )
    if slow_rate >= breaker.slow_call_rate_threshold:
        return (
            f"slow-call rate {slow_rate:.0f}% (calls of {breaker.slow_call_duration_s:g}s or "
            f"more) over the last {len(outcomes)} calls reached the threshold of "
            f"{breaker.slow_call_rate_threshold:g}%"
        )
    return None


def _due_transition(breaker: CircuitBreaker, *, now: datetime) -> tuple[str, str] | None:
    """The transition that only the passing of time causes, due at `now`: (to, reason)."""
    if (
        breaker.state == CircuitBreaker.State.OPEN
        and not breaker.forced
        and now >= breaker.state_changed_at + timedelta(seconds=breaker.open_duration_s)
    ):
        return (
            CircuitBreaker.State.HALF_OPEN,
            f"open for {breaker.open_duration_s:g}s: admitting trial calls",
        )
    if (
        breaker.state == CircuitBreaker.State.HALF_OPEN
        and breaker.half_open_permits_issued >= breaker.half_open_permitted_calls
        and now >= breaker.state_changed_at + timedelta(seconds=breaker.half_open_max_wait_s)
    ):
        return (
            CircuitBreaker.State.OPEN,
            f"trial calls did not all report back within {breaker.half_open_max_wait_s:g}s",
        )
    return None


def _expire_states(breaker: CircuitBreaker, *, now: datetime) -> None:
    """Apply the transitions that only the passing of time causes."""
    due = _due_transition(breaker, now=now)
    if due:
        to, reason = due
        _transition(breaker, to=to, reason=reason, now=now)


def _refuses_as_it_stands(breaker: CircuitBreaker, *, now: datetime) -> bool:
    """Whether the breaker refuses a call at `now` without a change of its own: open with its
    wait not over (or forced), or half-open with every trial permit taken and its wait for
    them not over."""
    if _due_transition(breaker, now=now):
        return False
    if breaker.state == CircuitBreaker.State.OPEN:
        return True
    return (
        breaker.state == CircuitBreaker.State.HALF_OPEN
        and breaker.half_open_permits_issued >= breaker.half_open_permitted_calls
    )


@db_retrying()
def breaker_admit_call(*, provider: Provider, now: Clock = timezone.now) -> str | None:
    """Ask to call the provider: the state that admits the call (`closed`, or `half_open` for a
    trial call, which takes a trial permit), None when the breaker refuses it.

    Every admitted call must be reported with `breaker_record_success`,
    `breaker_record_failure` or `breaker_release_permission`. Only an answer that changes the
    breaker takes its row lock (see the module).
    """
    breaker = _committed(provider) or breaker_get_or_create(provider=provider)
    if breaker.state == CircuitBreaker.State.CLOSED:
        return CircuitBreaker.State.CLOSED
    if _refuses_as_it_stands(breaker, now=now()):
        return None
    return _admit_locked(provider=provider, now=now)


def breaker_acquire_permission(*, provider: Provider, now: Clock = timezone.now) -> bool:
    """Ask to call the provider: True admits the call (see `breaker_admit_call`)."""
    return breaker_admit_call(provider=provider, now=now) is not None


@transaction.atomic
def _admit_locked(*, provider: Provider, now: Clock) -> str | None:
    breaker = _locked(provider)
    moment = now()
    previous_state = breaker.state
    _expire_states(breaker, now=moment)
    changed = breaker.state != previous_state
    admitted_as = None
    if breaker.state == CircuitBreaker.State.CLOSED:
        admitted_as = CircuitBreaker.State.CLOSED
    elif (
        breaker.state == CircuitBreaker.State.HALF_OPEN
        and breaker.half_open_permits_issued < breaker.half_open_permitted_calls
    ):
        breaker.half_open_permits_issued += 1
        admitted_as = CircuitBreaker.State.HALF_OPEN
        changed = True
    if changed:
        breaker.save(update_fields=STATE_FIELDS)
    return admitted_as


def _success_changes_nothing(breaker: CircuitBreaker | None, *, duration_s: float) -> bool:
    """Whether recording a success of `duration_s` leaves the breaker as it is: a plain success
    in a closed breaker whose full window holds only plain successes (see the module)."""
    return (
        breaker is not None
        and breaker.state == CircuitBreaker.State.CLOSED
        and duration_s < breaker.slow_call_duration_s
        and len(breaker.window) == breaker.sliding_window_size
        and all(outcome == SUCCESS for outcome in breaker.window)
    )


@transaction.atomic
def _record(provider: Provider, *, failed: bool, duration_s: float, now: Clock) -> None:
    breaker = _locked(provider)
    moment = now()
    slow = duration_s >= breaker.slow_call_duration_s
    outcome = (SLOW_FAILURE if slow else FAILURE) if failed else (SLOW_SUCCESS if slow else SUCCESS)
    if breaker.state == CircuitBreaker.State.CLOSED:
        breaker.window = [*breaker.window, outcome][-breaker.sliding_window_size :]
        if len(breaker.window) >= breaker.minimum_calls:
            reason = _trip_reason(breaker, breaker.window)
            if reason:
                _transition(breaker, to=CircuitBreaker.State.OPEN, reason=reason, now=moment)
    elif breaker.state == CircuitBreaker.State.HALF_OPEN:
        breaker.half_open_outcomes = [*breaker.half_open_outcomes, outcome]
        if len(breaker.half_open_outcomes) >= breaker.half_open_permitted_calls:
            reason = _trip_reason(breaker, breaker.half_open_outcomes)
            if reason:
                _transition(
                    breaker,
                    to=CircuitBreaker.State.OPEN,
                    reason=f"trial calls: {reason}",
                    now=moment,
                )
            else:
                _transition(
                    breaker,
                    to=CircuitBreaker.State.CLOSED,
                    reason=(
                        f"{len(breaker.half_open_outcomes)} trial calls stayed under the thresholds"
                    ),
                    now=moment,
                )
    else:
        # A call admitted before the breaker opened finished late: open ignores outcomes.
        return
    breaker.save(update_fields=STATE_FIELDS)


@db_retrying()
def breaker_record_success(
    *, provider: Provider, duration_s: float, now: Clock = timezone.now
) -> None:
    """Report an admitted call that succeeded (slow if it took `slow_call_duration_s` or more).

    A success that changes nothing is read without a lock and not written (see the module)."""
    if _success_changes_nothing(_committed(provider), duration_s=duration_s):
        return
    _record(provider, failed=False, duration_s=duration_s, now=now)


@db_retrying()
def breaker_record_failure(
    *, provider: Provider, duration_s: float, now: Clock = timezone.now
) -> None:
    """Report an admitted call that failed with an error `breaker_counts_failure` counts."""
    _record(provider, failed=True, duration_s=duration_s, now=now)


def _permit_out(breaker: CircuitBreaker | None) -> bool:
    """Whether a half-open breaker has a trial permit out that has not reported back."""
    return (
        breaker is not None
        and breaker.state == CircuitBreaker.State.HALF_OPEN
        and breaker.half_open_permits_issued > len(breaker.half_open_outcomes)
    )


@db_retrying()
def breaker_release_permission(*, provider: Provider) -> None:
    """Report an admitted call whose outcome says nothing about the provider (not counted).

    Half-open, it hands the trial permit back so that another call can take it; in any other
    state there is nothing to hand back, and nothing is locked.
    """
    if _permit_out(_committed(provider)):
        _release_locked(provider)


@transaction.atomic
def _release_locked(provider: Provider) -> None:
    breaker = _locked(provider)
    if _permit_out(breaker):
        breaker.half_open_permits_issued -= 1
        breaker.save(update_fields=STATE_FIELDS)


@transaction.atomic
def breaker_force_open(
    *, provider: Provider, reason: str = "forced open by an operator", now: Clock = timezone.now
) -> CircuitBreaker:
    """Open the breaker and keep it open (no half-open trials) until `breaker_reset`."""
    breaker = _locked(provider)
    if not (breaker.state == CircuitBreaker.State.OPEN and breaker.forced):
        _transition(breaker, to=CircuitBreaker.State.OPEN, reason=reason, now=now())
        breaker.forced = True
        breaker.save(update_fields=STATE_FIELDS)
    return breaker


@transaction.atomic
def breaker_reset(
    *, provider: Provider, reason: str = "reset by an operator", now: Clock = timezone.now
) -> CircuitBreaker:
    """Close the breaker with an empty window, whatever its state."""
    breaker = _locked(provider)
    moment = now()
    _transition(breaker, to=CircuitBreaker.State.CLOSED, reason=reason, now=moment)
    breaker.save(update_fields=STATE_FIELDS)
    return breaker


# Reading a breaker -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakerTransition:
    at: datetime
    from_state: str
    to_state: str
    reason: str


@dataclass(frozen=True)
class BreakerStatus:
    """A breaker as a caller would find it now, computed without writing anything.

    The stored state changes only when a call comes; `effective_state` is what the next call
    would see: an open breaker whose wait has passed reads `half_open` with `ready_for_trial`
    (the next call is a trial), and a half-open one whose trial calls never reported back
    reads `open`. The rates are over the calls recorded in the current state (the closed
    window, or the trial calls while half-open), None before any was recorded.
    """

    provider: str
    state: str
    effective_state: str
    forced: bool
    ready_for_trial: bool
    # When trial calls are (or were) admitted again; None when closed, half-open or forced.
    trials_resume_at: datetime | None
    state_changed_at: datetime
    calls_in_window: int
    failures_in_window: int
    failure_rate: float | None
    slow_call_rate: float | None
    half_open_permits_issued: int
    half_open_permitted_calls: int
    # A call that takes at least this long counts as slow (the breaker's configuration).
    slow_call_duration_s: float
    last_transition: BreakerTransition | None

    @property
    def summary(self) -> str:
        """One line for an operator: the effective state and why, with times to the second."""
        at = "%Y-%m-%d %H:%M:%S %Z"
        if self.forced:
            state = "open (forced), stays open until reset"
        elif self.ready_for_trial:
            state = f"half_open (ready for a trial since {self.trials_resume_at:{at}})"
        elif self.effective_state == CircuitBreaker.State.OPEN and self.trials_resume_at:
            state = f"open (trials resume at {self.trials_resume_at:{at}})"
        elif self.effective_state == CircuitBreaker.State.OPEN:
            state = "open (trial calls did not report back: the next call opens it again)"
        elif self.effective_state == CircuitBreaker.State.HALF_OPEN:
            state = (
                f"half_open ({self.half_open_permits_issued} of "
                f"{self.half_open_permitted_calls} trial calls admitted)"
            )
        else:
            state = "closed"
        if self.failure_rate is None:
            return f"{state}, no calls recorded"
        return (
            f"{state}, {self.failures_in_window} failed of {self.calls_in_window} calls "
            f"({self.failure_rate:.0f}% failed, {self.slow_call_rate:.0f}% slow)"
        )


def breaker_status(
    *, breaker: CircuitBreaker, now: datetime, last_transition: BreakerTransition | None = None
) -> BreakerStatus:
    """`breaker` as of `now` (see `BreakerStatus`); reads the row it is given, writes nothing.

    `breaker` may be unsaved (a provider that was never called has no row yet: it behaves as
    a closed breaker with the default configuration)."""
    state = breaker.state
    effective = state
    trials_resume_at = None
    if state == CircuitBreaker.State.OPEN and not breaker.forced:
        trials_resume_at = breaker.state_changed_at + timedelta(seconds=breaker.open_duration_s)
        if now >= trials_resume_at:
            effective = CircuitBreaker.State.HALF_OPEN
    elif (
        state == CircuitBreaker.State.HALF_OPEN
        and breaker.half_open_permits_issued >= breaker.half_open_permitted_calls
        and now >= breaker.state_changed_at + timedelta(seconds=breaker.half_open_max_wait_s)
    ):
        effective = CircuitBreaker.State.OPEN
    ready_for_trial = state == CircuitBreaker.State.OPEN and effective != state
    outcomes = breaker.half_open_outcomes if state == CircuitBreaker.State.HALF_OPEN else []
    if state == CircuitBreaker.State.CLOSED:
        outcomes = breaker.window
    failure_rate, slow_rate = _rates(outcomes) if outcomes else (None, None)
    return BreakerStatus(
        provider=breaker.provider.name,
        state=state,
        effective_state=effective,
        forced=breaker.forced,
        ready_for_trial=ready_for_trial,
        trials_resume_at=trials_resume_at,
        state_changed_at=breaker.state_changed_at,
        calls_in_window=len(outcomes),
        failures_in_window=_failures(outcomes),
        failure_rate=failure_rate,
        slow_call_rate=slow_rate,
        half_open_permits_issued=breaker.half_open_permits_issued,
        half_open_permitted_calls=breaker.half_open_permitted_calls,
        slow_call_duration_s=breaker.slow_call_duration_s,
        last_transition=last_transition,
    )
