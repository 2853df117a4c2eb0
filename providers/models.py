"""Provider configurations: which engine runs a DSPy program, with which defaults and fallbacks.

The API key of an `openai` provider is never stored: only the name of the environment variable
that holds it, read at call time.
"""

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from core import generation
from providers.choices import BreakerState, PoolPolicy, ProviderAdapter, ProviderKind
from providers.validation import (
    ENV_VAR_NAME_VALIDATOR,
    PROVIDER_NAME_VALIDATOR,
    provider_config_errors,
    validate_base_url,
)

# The columns an operator edits (API, admin, services); the rest is derived or bookkeeping.
PROVIDER_FIELDS = (
    "name",
    "kind",
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "hardware_optimization",
    "serving_cluster",
    "timeout_s",
    "base_url",
    "api_key_env",
    "engine_path",
    "adapter",
    "enabled",
    "policy",
)


class Provider(models.Model):
    Kind = ProviderKind
    Adapter = ProviderAdapter
    Policy = PoolPolicy

    name = models.CharField(max_length=100, unique=True, validators=[PROVIDER_NAME_VALIDATOR])
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Blank only for a pool, whose members have the models (`provider_config_errors`).
    model = models.CharField(
        max_length=500,
        blank=True,
        help_text=(
            "mlx: a local model directory (absolute, or relative to VAR_DIR/models); "
            "openai: the model identifier the endpoint expects; custom: passed to the engine; "
            "pool: blank (its members have the models)."
        ),
    )
    max_tokens = models.PositiveIntegerField(
        default=256,
        validators=[
            MinValueValidator(generation.MAX_TOKENS_MIN),
            MaxValueValidator(generation.MAX_TOKENS_CEILING),
        ],
    )
    temperature = models.FloatField(
        default=0.0,
        validators=[
            MinValueValidator(generation.TEMPERATURE_MIN),
            MaxValueValidator(generation.TEMPERATURE_MAX),
        ],
    )
    top_p = models.FloatField(
        default=1.0,
        validators=[
            MinValueValidator(generation.TOP_P_MIN),
            MaxValueValidator(generation.TOP_P_MAX),
        ],
    )
    hardware_optimization = models.BooleanField(
        default=True,
        help_text="mlx: apply the CPU optimisations (fast BLAS, de-quantised weights) when useful.",
    )
    serving_cluster = models.CharField(
        max_length=100,
        blank=True,
        help_text=(
            "mlx: the inference cluster (one of Q_INFERENCE_CLUSTERS) whose workers load the "
            "model and run its executions, e.g. the one on a machine with an accelerator; "
            "blank: the first of them."
        ),
    )
    timeout_s = models.FloatField(
        "timeout (s)", default=60.0, validators=[MinValueValidator(0.1), MaxValueValidator(3600.0)]
    )
    base_url = models.CharField(
        "base URL",
        max_length=500,
        blank=True,
        validators=[validate_base_url],
        help_text="openai: the endpoint, e.g. http://host:8080/v1",
    )
    api_key_env = models.CharField(
        "API key variable",
        max_length=100,
        blank=True,
        validators=[ENV_VAR_NAME_VALIDATOR],
        help_text="openai: the name of the environment variable that holds the API key.",
    )
    engine_path = models.CharField(
        max_length=300,
        blank=True,
        help_text="custom: dotted path to an engine class (complete, stream, close).",
    )
    adapter = models.CharField(max_length=16, choices=Adapter.choices, default=Adapter.AUTO)
    enabled = models.BooleanField(default=True)
    policy = models.CharField(
        max_length=32,
        choices=Policy.choices,
        default=Policy.LEAST_OUTSTANDING,
        help_text="pool: how the member for each call is picked.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    fallbacks = models.ManyToManyField(
        "self",
        through="ProviderFallback",
        through_fields=("provider", "fallback"),
        symmetrical=False,
        related_name="fallback_for",
        blank=True,
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=ProviderKind.values), name="provider_kind_known"
            ),
            models.CheckConstraint(
                condition=Q(adapter__in=ProviderAdapter.values),
                name="provider_adapter_known",
            ),
            models.CheckConstraint(
                condition=Q(policy__in=PoolPolicy.values), name="provider_policy_known"
            ),
            models.CheckConstraint(
                condition=Q(max_tokens__gte=1), name="provider_max_tokens_positive"
            ),
            models.CheckConstraint(
                condition=Q(temperature__gte=0.0, temperature__lte=2.0),
                name="provider_temperature_range",
            ),
            models.CheckConstraint(
                condition=Q(top_p__gte=0.0, top_p__lte=1.0), name="provider_top_p_range"
            ),
            models.CheckConstraint(condition=Q(timeout_s__gt=0), name="provider_timeout_positive"),
            # Only local models run in an inference cluster; any other kind would be routed
            # there by nothing, so a cluster named on one is a mistake.
            models.CheckConstraint(
                condition=Q(kind=ProviderKind.MLX) | Q(serving_cluster=""),
                name="provider_serving_cluster_only_local",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def model_path(self) -> Path:
        """The local model directory of an `mlx` provider (relative paths live under VAR_DIR)."""
        path = Path(self.model).expanduser()
        return path if path.is_absolute() else Path(settings.VAR_DIR) / "models" / path

    def clean(self) -> None:
        errors = provider_config_errors(provider=self)
        if self.serving_cluster and self.kind == ProviderKind.MLX:
            # Checked against this process's settings, which every machine shares: a cluster
            # no worker is configured for would leave the executions queued for good.
            clusters = settings.Q_INFERENCE_CLUSTERS
            if self.serving_cluster not in clusters:
                errors.setdefault("serving_cluster", []).append(
                    f"{self.serving_cluster!r} is not an inference cluster of this deployment "
                    f"(Q_INFERENCE_CLUSTERS: {', '.join(clusters)})."
                )
        elif self.serving_cluster:
            errors.setdefault("serving_cluster", []).append(
                "Only local (mlx) providers run in an inference cluster; leave this blank."
            )
        if errors:
            raise ValidationError(errors)


class ProviderFallback(models.Model):
    """One entry of a provider's ordered fallback list (position 0 is tried first)."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="fallback_links")
    fallback = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["provider", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "position"], name="provider_fallback_unique_position"
            ),
            models.UniqueConstraint(
                fields=["provider", "fallback"], name="provider_fallback_unique_fallback"
            ),
            models.CheckConstraint(
                condition=~Q(provider=F("fallback")), name="provider_fallback_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider_id} -> {self.fallback_id} (#{self.position})"


class ProviderPoolMember(models.Model):
    """One member of a pool (a provider of kind `pool`): a provider that serves the pool's
    calls, with its weight (weighted round robin; least outstanding divides by it).

    A member is never a pool itself, which the services check (`provider_pool_errors`): a
    constraint cannot read another row's kind."""

    pool = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="pool_members")
    member = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="pool_links")
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["pool", "position"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "member"], name="provider_pool_unique_member"),
            models.UniqueConstraint(
                fields=["pool", "position"], name="provider_pool_unique_position"
            ),
            models.CheckConstraint(condition=~Q(pool=F("member")), name="provider_pool_not_self"),
            models.CheckConstraint(
                condition=Q(weight__gte=1), name="provider_pool_weight_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pool_id} > {self.member_id} (weight {self.weight})"


class ProviderLease(models.Model):
    """A call in progress on a pool's member: the outstanding requests every process counts.

    Taken when a pool admits a call and deleted when the call ends, whatever its end. A process
    killed mid-call cannot delete its lease, so a lease counts only until `expires_at`
    (`PROVIDERS_POOL_LEASE_S` after it was taken, no shorter than a task may run)."""

    member = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="leases")
    pool = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="+")
    taken_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["member", "expires_at"], name="provider_lease_live")]

    def __str__(self) -> str:
        return f"{self.member_id} until {self.expires_at:%H:%M:%S}"


class PoolCursor(models.Model):
    """The weighted round robin's position in one pool, shared by every process."""

    pool = models.OneToOneField(
        Provider, on_delete=models.CASCADE, primary_key=True, related_name="pool_cursor"
    )
    sequence = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.pool_id} at {self.sequence}"


class CircuitBreaker(models.Model):
    """The breaker of one provider (resilience4j semantics), created lazily on first use.

    `window` holds the outcomes of the last `sliding_window_size` calls while closed, and
    `half_open_outcomes` those of the trial calls while half-open, one letter per call:
    `s` success, `S` slow success, `f` failure, `F` slow failure.
    """

    State = BreakerState

    provider = models.OneToOneField(
        Provider, on_delete=models.CASCADE, related_name="circuit_breaker"
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
                condition=Q(state__in=BreakerState.values),
                name="breaker_state_known",
            ),
            models.CheckConstraint(
                condition=Q(state=BreakerState.OPEN) | Q(forced=False),
                name="breaker_forced_only_open",
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
    from_state = models.CharField(max_length=16, choices=BreakerState.choices)
    to_state = models.CharField(max_length=16, choices=BreakerState.choices)
    reason = models.CharField(max_length=500)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["breaker", "-at"], name="breaker_event_recent")]

    def __str__(self) -> str:
        return f"{self.breaker.provider}: {self.from_state} -> {self.to_state} ({self.reason})"
