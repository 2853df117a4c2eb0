"""Executions of registered signatures and the provider calls they made.

Rows here are shared by the web processes and every django-q2 worker: state transitions are
guarded updates (`filter(status=...).update(...)`) or happen under a row lock, never a blind
`save()` of a row that another process may be changing.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from providers.models import CircuitBreaker


# Choices at module level, so that the models' constraints can be built from their values.
class ExecutionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_STATUSES = (
    ExecutionStatus.SUCCEEDED,
    ExecutionStatus.FAILED,
    ExecutionStatus.TIMED_OUT,
    ExecutionStatus.CANCELLED,
)

# The `core.notify` channel on which a process that finishes an execution says so (the
# payload is its id), for the sync requests waiting on it.
EXECUTION_FINISHED_CHANNEL = "execution_finished"


class ExecutionMode(models.TextChoices):
    SYNC = "sync", "Synchronous (the request waits)"
    ASYNC = "async", "Asynchronous (the client polls)"


class AttemptOutcome(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected by the open circuit breaker"


FAILED_OUTCOMES = (AttemptOutcome.FAILED, AttemptOutcome.REJECTED)


class FailureCause(models.TextChoices):
    """Why an attempt or an execution failed, in the operator's terms: what to fix, not which
    exception class said so (that is `error_type`). An execution's cause is its root cause
    (`executions.services.runs.execution_root_cause` states the rule)."""

    # The provider could not be reached (connection refused, DNS, reset).
    TRANSPORT = "transport", "Transport (unreachable)"
    # No answer within the provider's timeout.
    TIMEOUT = "timeout", "Timeout"
    # The model answered, but its text could not be read as the signature's output fields.
    PARSE = "parse", "Parse failure"
    # The provider's circuit breaker was open: nothing was called.
    BREAKER_OPEN = "breaker_open", "Breaker open"
    # The provider limits the toolkit's requests (HTTP 429).
    RATE_LIMITED = "rate_limited", "Rate limited"
    # The provider refused the credentials, or the toolkit has no usable key for it.
    AUTH = "auth", "Authentication"
    # The provider answered a body that is not the response it promised (not its JSON).
    INVALID_OUTPUT = "invalid_output", "Invalid provider output"
    # The provider failed on its side (HTTP 5xx, a backend error).
    PROVIDER_ERROR = "provider_error", "Provider error"
    # The provider refused this request as such (another HTTP 4xx).
    INVALID_REQUEST = "invalid_request", "Request refused"
    # The prompt does not fit the model's context window.
    CONTEXT_WINDOW = "context_window", "Context window exceeded"
    # The worker running it died, every run it was allowed (the reaper gave up).
    WORKER_LOST = "worker_lost", "Worker lost"
    # Cancelled before it started.
    CANCELLED = "cancelled", "Cancelled"
    # The toolkit itself failed while running it (the log has the traceback).
    INTERNAL = "internal", "Internal error"


class Execution(models.Model):
    Status = ExecutionStatus
    Mode = ExecutionMode
    TERMINAL_STATUSES = TERMINAL_STATUSES

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own (nor the foreign keys below): the composite indexes of Meta lead
    # with each of them, and every index costs each execution's INSERT and status UPDATE.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.SYNC)
    signature_version = models.ForeignKey(
        "registry.SignatureVersion",
        on_delete=models.PROTECT,
        related_name="executions",
        db_index=False,  # execution_list_signature
    )
    requested_provider = models.ForeignKey(
        "providers.Provider",
        on_delete=models.PROTECT,
        related_name="requested_executions",
        db_index=False,  # execution_provider_queue
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
    error_cause = models.CharField(
        "cause",
        max_length=32,
        choices=FailureCause.choices,
        blank=True,
        help_text="The root cause of a failure (empty unless it failed, timed out or was "
        "cancelled).",
    )
    rerun_of = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="reruns",
        help_text="The execution this one runs again (a re-run never changes the original).",
    )
    keep_trace = models.BooleanField(
        default=False,
        help_text=(
            "Keep the prompt and the raw output of successful calls too (failed calls always "
            "keep theirs). Set by the admin's Try it, off for API executions."
        ),
    )

    # Who asked: idempotency keys are scoped to the API key, or to the user for session auth.
    api_key = models.ForeignKey(
        "rest_framework_api_key.APIKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,  # execution_list_api_key (its rows with a key: those a lookup wants)
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
    input_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Succeeded: the answer's tokens; failed: those of every call of its last run.",
    )
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
            # The failure list, filtered by cause, newest first.
            models.Index(
                fields=["error_cause", "queued_at"],
                condition=~Q(error_cause=""),
                name="execution_cause_queued",
            ),
            # The list's order (`-queued_at`, `-id`, keyset pages) after one equality, for the
            # filters people combine with it; every other filter is checked on the rows such
            # an index (or `queued_at`'s own) reads, newest first, until a page is full. Each
            # index costs every insert, so only these three:
            # - the API list of an API key (it sees only its own executions), any filter; the
            #   key's id is long (its prefix and hash), so a session's rows are left out;
            models.Index(
                fields=["api_key", "-queued_at", "-id"],
                condition=Q(api_key__isnull=False),
                name="execution_list_api_key",
            ),
            # - by status (the failed ones, what is still queued), with or without a signature;
            models.Index(fields=["status", "-queued_at", "-id"], name="execution_list_status"),
            # - by signature (its versions' ids: `executions.filters`), with or without a status.
            models.Index(
                fields=["signature_version", "-queued_at", "-id"],
                name="execution_list_signature",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(error_cause__in=[*FailureCause.values, ""]),
                name="execution_error_cause_known",
            ),
            models.CheckConstraint(
                condition=Q(status__in=ExecutionStatus.values), name="execution_status_known"
            ),
            models.CheckConstraint(
                condition=Q(mode__in=ExecutionMode.values), name="execution_mode_known"
            ),
            # A finished execution says when it finished; an unfinished one cannot have.
            models.CheckConstraint(
                condition=(
                    Q(
                        status__in=[ExecutionStatus.QUEUED, ExecutionStatus.RUNNING],
                        finished_at__isnull=True,
                    )
                    | Q(status__in=TERMINAL_STATUSES, finished_at__isnull=False)
                ),
                name="execution_finished_at_matches_status",
            ),
            models.CheckConstraint(
                condition=Q(status=ExecutionStatus.RUNNING, heartbeat_at__isnull=False)
                | ~Q(status=ExecutionStatus.RUNNING),
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

    Outcome = AttemptOutcome

    execution = models.ForeignKey(
        Execution, on_delete=models.CASCADE, related_name="provider_attempts"
    )
    run = models.PositiveSmallIntegerField(help_text="The execution's claim this call belongs to.")
    position = models.PositiveSmallIntegerField(help_text="Order within the run (0 first).")
    provider = models.ForeignKey("providers.Provider", on_delete=models.PROTECT, related_name="+")
    pool = models.ForeignKey(
        "providers.Provider",
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        help_text="The pool whose member `provider` served this call (empty outside a pool).",
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error_type = models.CharField(max_length=200, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(
        blank=True, help_text="Written by the toolkit: what API clients see of a failure."
    )
    error_detail = models.TextField(
        blank=True,
        help_text=(
            "What the provider's error said, scrubbed of secrets: for staff only, never "
            "returned by the API."
        ),
    )
    counted_by_breaker = models.BooleanField(
        default=False, help_text="Whether this failure counted against the provider's breaker."
    )
    cause = models.CharField(max_length=32, choices=FailureCause.choices, blank=True)
    breaker_state = models.CharField(
        max_length=16,
        choices=CircuitBreaker.State.choices,
        blank=True,
        help_text="The provider's breaker state when the call was admitted (or refused).",
    )
    # The failure log's evidence, scrubbed of secrets and cut at a bound (the text says where);
    # kept for failed calls only.
    prompt = models.TextField(
        blank=True,
        help_text="The messages sent, as text (empty when EXECUTIONS_FAILURE_LOG_INPUTS is off: "
        "the prompt carries the inputs).",
    )
    raw_output = models.TextField(blank=True, help_text="What the model wrote, unparsed.")
    traceback = models.TextField(blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    duration_s = models.FloatField("duration (s)", default=0.0)

    class Meta:
        ordering = ["execution", "run", "position"]
        indexes = [
            # The failure log: failed and refused calls, newest first.
            models.Index(
                fields=["-started_at"],
                condition=Q(outcome__in=FAILED_OUTCOMES),
                name="execution_attempt_failures",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(cause__in=[*FailureCause.values, ""]),
                name="execution_attempt_cause_known",
            ),
            models.UniqueConstraint(
                fields=["execution", "run", "position"], name="execution_attempt_unique_position"
            ),
            models.CheckConstraint(
                condition=Q(outcome__in=AttemptOutcome.values),
                name="execution_attempt_outcome_known",
            ),
            models.CheckConstraint(
                condition=Q(duration_s__gte=0), name="execution_attempt_duration_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.execution_id} run {self.run} #{self.position}: {self.outcome}"


class FailureManager(models.Manager):
    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(outcome__in=FAILED_OUTCOMES)


class ExecutionFailure(ExecutionAttempt):
    """The failure log: the attempts that failed or that an open breaker refused."""

    objects = FailureManager()

    class Meta:
        proxy = True
        verbose_name = "failure"
        verbose_name_plural = "failure log"
