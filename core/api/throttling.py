"""Per-client rate limits, counted atomically where every process sees them.

Each client has a budget per fixed window (`600/min`: 600 requests in each minute that starts
on the minute). A request adds one to its window's counter in one atomic step, Redis `INCR`
when Redis is the cache, else an `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` on the
database, so concurrent requests of one client in many processes can never all read the
same count and all pass (a read-modify-write in the cache would let them).
"""

import time
from datetime import timedelta

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


def counter_increment(*, key: str, ttl_s: int) -> int:
    """Add one to the counter `key` (created at 1, expiring after `ttl_s`); its new value."""
    if _redis_cache():
        cache.add(key, 0, timeout=ttl_s)
        return cache.incr(key)
    table = RateLimitCounter._meta.db_table
    expires_at = timezone.now() + timedelta(seconds=ttl_s)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key, count, expires_at) VALUES (%s, 1, %s) "  # noqa: S608
            f"ON CONFLICT (key) DO UPDATE SET count = {table}.count + 1 RETURNING count",
            [key, expires_at],
        )
        count = cursor.fetchone()[0]
    if count == 1:
        # Once per new window: forget the windows that are over.
        RateLimitCounter.objects.filter(expires_at__lt=timezone.now()).delete()
    return count


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
        now = time.time()
        window = int(now // self.duration)
        self.window_ends_at = (window + 1) * self.duration
        count = counter_increment(
            key=f"throttle:{self.scope}:{ident}:{self.duration}:{window}",
            ttl_s=int(self.duration) + 1,
        )
        self.now = now
        return count <= self.num_requests

    def wait(self) -> float:
        return max(self.window_ends_at - self.now, 1.0)
