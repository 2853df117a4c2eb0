"""Per-client rate limits, counted atomically where every process sees them.

Each client has a budget per fixed window (`600/min`: 600 requests in the minute that starts
with its first request). A request adds one to its window's counter in one atomic step, Redis `INCR`
when Redis is the cache, else an `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` on the
database, so concurrent requests of one client in many processes can never all read the
same count and all pass (a read-modify-write in the cache would let them).
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from core.api.authentication import APIKeyClient
from core.models import RateLimitCounter


def _redis_cache() -> bool:
    return settings.CACHES["default"]["BACKEND"].endswith("RedisCache")


def counter_increment(*, key: str, window_s: int) -> tuple[int, float]:
    """Add one to the counter `key` in its current window, and return its new value and how
    many seconds that window has left. A window starts with the first request after the
    previous one ended, and lasts `window_s`."""
    if _redis_cache():
        cache.add(key, 0, timeout=window_s)
        count = cache.incr(key)
        ttl = cache.ttl(key) if hasattr(cache, "ttl") else None
        return count, float(ttl if ttl and ttl > 0 else window_s)
    table = RateLimitCounter._meta.db_table
    now = timezone.now()
    with connection.cursor() as cursor:
        # One row a client: a request after its window ended starts a new window at 1.
        cursor.execute(
            f"INSERT INTO {table} (key, count, expires_at) VALUES (%s, 1, %s) "  # noqa: S608
            f"ON CONFLICT (key) DO UPDATE SET "
            f"count = CASE WHEN {table}.expires_at <= %s THEN 1 ELSE {table}.count + 1 END, "
            f"expires_at = CASE WHEN {table}.expires_at <= %s THEN excluded.expires_at "
            f"ELSE {table}.expires_at END "
            f"RETURNING count, expires_at",
            [key, now + timedelta(seconds=window_s), now, now],
        )
        count, expires_at = cursor.fetchone()
    if isinstance(expires_at, str):  # SQLite hands timestamps back as text
        expires_at = datetime.fromisoformat(expires_at)
    if timezone.is_naive(expires_at):
        expires_at = timezone.make_aware(expires_at, UTC)
    return count, max((expires_at - now).total_seconds(), 0.0)


class ClientRateThrottle(SimpleRateThrottle):
    """One budget per API key (rate `api_key`) and one per staff user (rate `user`).

    Unauthenticated requests are not throttled here: they are refused before any work.
    """

    def __init__(self) -> None:
        # The scope depends on the request, so the rate is resolved in `allow_request`.
        pass

    def get_rate(self) -> str | None:
        # Read at call time (not at import, as DRF does), so settings changes take effect.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        if isinstance(request.user, APIKeyClient):
            self.scope = "api_key"
            ident = request.auth.prefix
        elif request.user is not None and request.user.is_authenticated:
            self.scope = "user"
            ident = str(request.user.pk)
        else:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        count, self.remaining_s = counter_increment(
            key=f"throttle:{self.scope}:{ident}:{self.duration}", window_s=int(self.duration)
        )
        return count <= self.num_requests

    def wait(self) -> float:
        return max(self.remaining_s, 1.0)
