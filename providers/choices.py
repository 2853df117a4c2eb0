"""The choices of the providers' models, below both the models and their validation.

At module level (not nested in the models) so that the models' constraints are built from
their values and `providers.validation` can use them without importing the models.
"""

from django.db import models


class ProviderKind(models.TextChoices):
    MLX = "mlx", "Local MLX model"
    OPENAI = "openai", "OpenAI-compatible endpoint"
    CUSTOM = "custom", "Custom engine class"
    POOL = "pool", "Pool of providers (load-balanced)"


class PoolPolicy(models.TextChoices):
    """How a pool picks the member for a call, among those whose breaker admits one."""

    LEAST_OUTSTANDING = "least_outstanding", "Least outstanding requests"
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin", "Weighted round robin"
    POWER_OF_TWO_CHOICES = "power_of_two_choices", "Random with two choices"


class ProviderAdapter(models.TextChoices):
    AUTO = "auto", "Automatic (compact for small local models, chat elsewhere)"
    COMPACT = "compact", "Compact (small local models)"
    CHAT = "chat", "DSPy ChatAdapter"
    JSON = "json", "DSPy JSONAdapter"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half-open"
