"""`/metrics` for Prometheus, answered only to allowed scrapers.

A scraper is allowed when its address is in `METRICS_ALLOWED_ADDRESSES` (default: loopback
only) or when it sends `Authorization: Bearer <METRICS_BEARER_TOKEN>` (when a token is set).
Everyone else gets a 403, so provider names, signatures and traffic figures stay private.

With `PROMETHEUS_MULTIPROC_DIR` set (`manage.py serve` sets it for every process it starts),
the page adds up the files every process wrote there, whichever web worker answers; without
it, it shows this process's own registry. Either way the database's state
(`monitoring.collectors.DatabaseCollector`) is read at the moment of the scrape.
"""

import hmac
from pathlib import Path

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from prometheus_client.multiprocess import MultiProcessCollector

from core import env
from monitoring.collectors import DatabaseCollector, forget_dead_processes


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_BEARER_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return True
    return request.META.get("REMOTE_ADDR", "") in settings.METRICS_ALLOWED_ADDRESSES


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return HttpResponseForbidden(
            "Metrics are served to the addresses in METRICS_ALLOWED_ADDRESSES or with the bearer "
            "token METRICS_BEARER_TOKEN.\n",
            content_type="text/plain",
        )
    return HttpResponse(
        prometheus_client.generate_latest(metrics_registry()),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )


def metrics_registry() -> prometheus_client.CollectorRegistry:
    """What one scrape reads: every process's metrics (or this process's), and the database's.

    Built per scrape, so the multiprocess files are read afresh each time (as django-prometheus'
    own view does); its view alone would leave out the database collector.
    """
    registry = prometheus_client.CollectorRegistry()
    # The variable prometheus_client read when this process imported it.
    directory = env.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        forget_dead_processes(Path(directory))
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(prometheus_client.REGISTRY)
    registry.register(DatabaseCollector())
    return registry
