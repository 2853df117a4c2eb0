"""The cache backends of the toolkit: Django's own, counting their reads for `/metrics`.

django-prometheus counts cache reads only for backends it wraps, and it has none for the
database cache (the default here) and only a django-redis one for Redis; these add its
`django_cache_get_total`, `_hits_total`, `_misses_total` and `_get_fail_total` counters to
Django's database and Redis backends.
"""

from typing import Any

from django.core.cache.backends import db, redis
from django_prometheus.cache.metrics import (
    django_cache_get_fail_total,
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)

# Stands for "not in the cache", since None (or any default) may be a cached value.
_MISSING = object()


class _CountedReads:
    metrics_label = ""

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        django_cache_get_total.labels(backend=self.metrics_label).inc()
        try:
            value = super().get(key, _MISSING, version)
        except Exception:
            django_cache_get_fail_total.labels(backend=self.metrics_label).inc()
            raise
        if value is _MISSING:
            django_cache_misses_total.labels(backend=self.metrics_label).inc()
            return default
        django_cache_hits_total.labels(backend=self.metrics_label).inc()
        return value


class DatabaseCache(_CountedReads, db.DatabaseCache):
    metrics_label = "database"


class RedisCache(_CountedReads, redis.RedisCache):
    metrics_label = "redis"
