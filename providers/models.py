"""Provider configurations: which engine runs a DSPy program, with which defaults and fallbacks.

The API key of an `openai` provider is never stored: only the name of the environment variable
that holds it, read at call time.
"""

from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

PROVIDER_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    "Use letters, digits, '.', '_' and '-', starting with a letter or digit.",
    code="invalid_name",
)
ENV_VAR_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]*$",
    "Enter the NAME of an environment variable (letters, digits, '_'), not its value.",
    code="invalid_env_var_name",
)


def validate_base_url(value: str) -> None:
    """An http(s) URL with a host; single-label hosts (`http://mlx-server:8080/v1`) are fine."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            "Enter an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/v1.",
            code="invalid_base_url",
        )


class Provider(models.Model):
    class Kind(models.TextChoices):
        MLX = "mlx", "Local MLX model"
        OPENAI = "openai", "OpenAI-compatible endpoint"
        CUSTOM = "custom", "Custom engine class"

    class Adapter(models.TextChoices):
        AUTO = "auto", "Automatic (compact for small local models, chat elsewhere)"
        COMPACT = "compact", "Compact (small local models)"
        CHAT = "chat", "DSPy ChatAdapter"
        JSON = "json", "DSPy JSONAdapter"

    name = models.CharField(max_length=100, unique=True, validators=[PROVIDER_NAME_VALIDATOR])
    kind = models.CharField(max_length=16, choices=Kind.choices)
    model = models.CharField(
        max_length=500,
        help_text=(
            "mlx: a local model directory (absolute, or relative to VAR_DIR/models); "
            "openai: the model identifier the endpoint expects; custom: passed to the engine."
        ),
    )
    max_tokens = models.PositiveIntegerField(
        default=256, validators=[MinValueValidator(1), MaxValueValidator(32_768)]
    )
    temperature = models.FloatField(
        default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    top_p = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    hardware_optimization = models.BooleanField(
        default=True,
        help_text="mlx: apply the CPU optimisations (fast BLAS, de-quantised weights) when useful.",
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
                condition=Q(kind__in=["mlx", "openai", "custom"]), name="provider_kind_known"
            ),
            models.CheckConstraint(
                condition=Q(adapter__in=["auto", "compact", "chat", "json"]),
                name="provider_adapter_known",
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
        ]

    def __str__(self) -> str:
        return self.name

    def model_path(self) -> Path:
        """The local model directory of an `mlx` provider (relative paths live under VAR_DIR)."""
        path = Path(self.model).expanduser()
        return path if path.is_absolute() else Path(settings.VAR_DIR) / "models" / path

    def clean(self) -> None:
        # Imported here: services import dspy and the engine loader, which need the app registry.
        from providers.services import provider_config_errors

        errors = provider_config_errors(provider=self)
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
