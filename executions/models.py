"""Executions of registered signatures, the provider calls they made, and per-provider breakers.

Rows here are shared by the web processes and every django-q2 worker: state transitions are
guarded updates (`filter(status=...).update(...)`) or happen under a row lock, never a blind
`save()` of a row that another process may be changing.
"""

from django.db import models
from django.db.models import Q
from django.utils import timezone


class CircuitBreaker(models.Model):
    """The breaker of one provider (resilience4j semantics), created lazily on first use.

    `window` holds the outcomes of the last `sliding_window_size` calls while closed, and
    `half_open_outcomes` those of the trial calls while half-open, one letter per call:
    `s` success, `S` slow success, `f` failure, `F` slow failure.
    """

    class State(models.TextChoices):
        CLOSED = "closed", "Closed"
        OPEN = "open", "Open"
        HALF_OPEN = "half_open", "Half-open"

    provider = models.OneToOneField(
        "providers.Provider", on_delete=models.CASCADE, related_name="circuit_breaker"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    forced = models.BooleanField(
        default=False,
        help_text="Forced open by an operator: stays open until reset, never half-opens.",
    )
    state_changed_at = models.DateTimeField(default=timezone.now)

    failure_rate_threshold = models.FloatField(
        default=50.0, help_text="Percent of failed calls in the window that opens the breaker."
    )
    slow_call_rate_threshold = models.FloatField(
        default=100.0, help_text="Percent of slow calls in the window that opens the breaker."
    )
    slow_call_duration_s = models.FloatField(
        default=60.0, help_text="A call that takes at least this long counts as slow."
    )
    sliding_window_size = models.PositiveIntegerField(
        default=20, help_text="How many of the most recent calls the rates are computed over."
    )
    minimum_calls = models.PositiveIntegerField(
        default=10, help_text="Calls recorded before the rates can open the breaker."
    )
    open_duration_s = models.FloatField(
        default=30.0, help_text="How long the breaker stays open before admitting trial calls."
    )
    half_open_permitted_calls = models.PositiveIntegerField(
        default=3, help_text="Trial calls admitted while half-open."
    )
    half_open_max_wait_s = models.FloatField(
        default=300.0,
        help_text=(
            "If the trial calls have not all reported back after this long (a worker died "
            "holding a permit), the breaker opens again and later admits fresh trials."
        ),
    )

    window = models.JSONField(default=list, blank=True)
    half_open_permits_issued = models.PositiveIntegerField(default=0)
    half_open_outcomes = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider__name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=["closed", "open", "half_open"]),
                name="breaker_state_known",
            ),
            models.CheckConstraint(
                condition=Q(state="open") | Q(forced=False), name="breaker_forced_only_open"
            ),
            models.CheckConstraint(
                condition=Q(failure_rate_threshold__gt=0, failure_rate_threshold__lte=100),
                name="breaker_failure_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(slow_call_rate_threshold__gt=0, slow_call_rate_threshold__lte=100),
                name="breaker_slow_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(slow_call_duration_s__gt=0), name="breaker_slow_duration_positive"
            ),
            models.CheckConstraint(
                condition=Q(sliding_window_size__gte=1), name="breaker_window_size_positive"
            ),
            models.CheckConstraint(
                condition=Q(minimum_calls__gte=1), name="breaker_minimum_calls_positive"
            ),
            models.CheckConstraint(
                condition=Q(open_duration_s__gte=0), name="breaker_open_duration_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(half_open_permitted_calls__gte=1),
                name="breaker_half_open_calls_positive",
            ),
            models.CheckConstraint(
                condition=Q(half_open_max_wait_s__gt=0), name="breaker_half_open_wait_positive"
            ),
            # Exactly the configured number of trial calls: never more permits than that.
            models.CheckConstraint(
                condition=Q(half_open_permits_issued__lte=models.F("half_open_permitted_calls")),
                name="breaker_half_open_permits_bounded",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} breaker ({self.get_state_display()})"


class BreakerEvent(models.Model):
    """One state transition of a breaker."""

    breaker = models.ForeignKey(CircuitBreaker, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=16, choices=CircuitBreaker.State.choices)
    to_state = models.CharField(max_length=16, choices=CircuitBreaker.State.choices)
    reason = models.CharField(max_length=500)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["breaker", "-at"], name="breaker_event_recent")]

    def __str__(self) -> str:
        return f"{self.breaker.provider}: {self.from_state} -> {self.to_state} ({self.reason})"
