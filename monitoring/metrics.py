"""`/metrics` for Prometheus, answered only to allowed scrapers.

A scraper is allowed when its address is in `METRICS_ALLOWED_ADDRESSES` (default: loopback
only) or when it sends `Authorization: Bearer <METRICS_BEARER_TOKEN>` (when a token is set).
Everyone else gets a 403, so provider names, signatures and traffic figures stay private.
"""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django_prometheus.exports import ExportToDjangoView


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
    return ExportToDjangoView(request)
