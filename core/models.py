"""The one table of the shared layer: rate-limit counters, when Redis is not the cache."""

from django.db import models


class RateLimitCounter(models.Model):
    """Requests of one client in one fixed window, counted by an atomic upsert."""

    key = models.CharField(max_length=200, primary_key=True)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "rate-limit counter"

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"
