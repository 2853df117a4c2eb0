"""Executions of registered signatures, the provider calls they made, and per-provider breakers.

Rows here are shared by the web processes and every django-q2 worker: state transitions are
guarded updates (`filter(status=...).update(...)`) or happen under a row lock, never a blind
`save()` of a row that another process may be changing.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Execution(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"

    class Mode(models.TextChoices):
        SYNC = "sync", "Synchronous (the request waits)"
        ASYNC = "async", "Asynchronous (the client polls)"

    TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.SYNC)
    signature_version = models.ForeignKey(
        "registry.SignatureVersion", on_delete=models.PROTECT, related_name="executions"
    )
    requested_provider = models.ForeignKey(
        "providers.Provider", on_delete=models.PROTECT, related_name="requested_executions"
    )
    provider = models.ForeignKey(
        "providers.Provider",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="answered_executions",
        help_text="The provider that produced the outputs (after fallback).",
    )
    inputs = models.JSONField(default=dict)
    config = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(null=True, blank=True)
    timeout_s = models.FloatField("timeout (s)", null=True, blank=True)
    batch_id = models.UUIDField(null=True, blank=True, db_index=True)

    error_type = models.CharField(max_length=200, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    # Who asked: idempotency keys are scoped to the API key, or to the user for session auth.
    api_key = models.ForeignKey(
        "rest_framework_api_key.APIKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)

    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker claimed this execution."
    )
    task_id = models.CharField(max_length=64, blank=True, help_text="Last django-q2 task id.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    execution_time_s = models.FloatField("execution time (s)", null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    memory_mb = models.FloatField("peak memory (MB)", null=True, blank=True)

    class Meta:
        ordering = ["-queued_at"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="execution_status_heartbeat"),
            models.Index(
                fields=["requested_provider", "status", "queued_at"],
                name="execution_provider_queue",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "queued",
                        "running",
                        "succeeded",
                        "failed",
                        "timed_out",
                        "cancelled",
                    ]
                ),
                name="execution_status_known",
            ),
            models.CheckConstraint(
                condition=Q(mode__in=["sync", "async"]), name="execution_mode_known"
            ),
            # A finished execution says when it finished; an unfinished one cannot have.
            models.CheckConstraint(
                condition=(
                    Q(status__in=["queued", "running"], finished_at__isnull=True)
                    | Q(
                        status__in=["succeeded", "failed", "timed_out", "cancelled"],
                        finished_at__isnull=False,
                    )
                ),
                name="execution_finished_at_matches_status",
            ),
            models.CheckConstraint(
                condition=Q(status="running", heartbeat_at__isnull=False) | ~Q(status="running"),
                name="execution_running_has_heartbeat",
            ),
            models.CheckConstraint(
                condition=Q(timeout_s__isnull=True) | Q(timeout_s__gt=0),
                name="execution_timeout_positive",
            ),
            models.UniqueConstraint(
                fields=["api_key", "idempotency_key"],
                condition=Q(api_key__isnull=False) & ~Q(idempotency_key=""),
                name="execution_idempotency_per_api_key",
            ),
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=Q(api_key__isnull=True, created_by__isnull=False)
                & ~Q(idempotency_key=""),
                name="execution_idempotency_per_user",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.TERMINAL_STATUSES

    @property
    def success(self) -> bool | None:
        """Whether it succeeded; None until it has finished."""
        return self.status == self.Status.SUCCEEDED if self.is_finished else None


class ExecutionAttempt(models.Model):
    """One call (or refused call) to one provider while running an execution."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected by the open circuit breaker"

    execution = models.ForeignKey(
        Execution, on_delete=models.CASCADE, related_name="provider_attempts"
    )
    run = models.PositiveSmallIntegerField(help_text="The execution's claim this call belongs to.")
    position = models.PositiveSmallIntegerField(help_text="Order within the run (0 first).")
    provider = models.ForeignKey("providers.Provider", on_delete=models.PROTECT, related_name="+")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error_type = models.CharField(max_length=200, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    counted_by_breaker = models.BooleanField(
        default=False, help_text="Whether this failure counted against the provider's breaker."
    )
    started_at = models.DateTimeField()
    duration_s = models.FloatField("duration (s)", default=0.0)

    class Meta:
        ordering = ["execution", "run", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "run", "position"], name="execution_attempt_unique_position"
            ),
            models.CheckConstraint(
                condition=Q(outcome__in=["succeeded", "failed", "rejected"]),
                name="execution_attempt_outcome_known",
            ),
            models.CheckConstraint(
                condition=Q(duration_s__gte=0), name="execution_attempt_duration_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.execution_id} run {self.run} #{self.position}: {self.outcome}"


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
        "slow call duration (s)",
        default=60.0,
        help_text="A call that takes at least this long counts as slow.",
    )
    sliding_window_size = models.PositiveIntegerField(
        default=20, help_text="How many of the most recent calls the rates are computed over."
    )
    minimum_calls = models.PositiveIntegerField(
        default=10, help_text="Calls recorded before the rates can open the breaker."
    )
    open_duration_s = models.FloatField(
        "open duration (s)",
        default=30.0,
        help_text="How long the breaker stays open before admitting trial calls.",
    )
    half_open_permitted_calls = models.PositiveIntegerField(
        default=3, help_text="Trial calls admitted while half-open."
    )
    half_open_max_wait_s = models.FloatField(
        "half-open max wait (s)",
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
