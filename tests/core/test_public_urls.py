"""Only what is meant to be public answers without credentials.

Walks every URL pattern of the site, requests each without credentials (from a non-loopback
address) and checks that it is refused, except the health probes, the API schema and docs,
and the admin's login page. `/metrics` answers loopback scrapers and refuses the rest.
"""

import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern

PUBLIC = {
    "/health/live",
    "/health/ready",
    "/healthz",
    "/readyz",
    "/api/schema/",
    "/api/docs/",
    "/api/redoc/",
}
ADMIN_LOGIN = "/admin/login/"
SAMPLES = {"int": "1", "uuid": str(uuid.uuid4()), "path": "x", "slug": "x", "str": "x"}
REMOTE = {"REMOTE_ADDR": "203.0.113.7"}


def _route_sample(pattern: RoutePattern) -> str:
    route = str(pattern)
    for name, converter in pattern.converters.items():
        kind = type(converter).__name__.replace("Converter", "").lower()
        for template in (f"<{kind}:{name}>", f"<{name}>"):
            route = route.replace(template, SAMPLES.get(kind, "x"))
    return route


def _walk(resolvers, prefix=""):
    """(concrete path, pattern) for every pattern a sample path can be made for."""
    for entry in resolvers:
        if isinstance(entry.pattern, RoutePattern):
            part = _route_sample(entry.pattern)
        else:
            regex = entry.pattern.regex.pattern.lstrip("^").rstrip("$").replace("\\Z", "")
            if any(char in regex for char in "()[]*+?|\\"):
                # Regex routes with groups (the admin's app index and catch-all) are reached
                # by the concrete admin URLs below.
                continue
            part = regex
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + part)
        elif isinstance(entry, URLPattern):
            yield "/" + prefix + part, entry


def _paths():
    paths = {path for path, _ in _walk(get_resolver().url_patterns)}
    # The admin's regex routes, made concrete.
    paths |= {"/admin/registry/", "/admin/providers/provider/", "/admin/no/such/page/"}
    return sorted(paths)


def test_the_walk_reaches_every_app():
    paths = _paths()
    for prefix in ("/api/v1/signatures/", "/api/v1/providers/", "/api/v1/executions", "/admin/"):
        assert any(path.startswith(prefix) for path in paths), prefix
    assert len(paths) > 40


@pytest.mark.django_db
@pytest.mark.parametrize("path", _paths())
def test_nothing_but_the_public_pages_answers_without_credentials(client, path):
    for method in ("get", "post"):
        response = getattr(client, method)(path, **REMOTE)
        if path in PUBLIC or path == ADMIN_LOGIN:
            continue
        if path.startswith("/api/"):
            assert response.status_code in (401, 403, 404, 405), (method, response.status_code)
            assert response.status_code != 404 or "{" not in path, (method, path)
        elif path == "/metrics":
            assert response.status_code == 403
        else:
            # The admin sends anonymous visitors to its login page (or finds nothing).
            assert response.status_code in (302, 404, 405), (method, response.status_code)
            if response.status_code == 302:
                # Logging out while logged out lands on the admin index (itself behind login).
                expected = "/admin/" if path == "/admin/logout/" else ADMIN_LOGIN
                assert response["Location"].startswith(expected), response["Location"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_the_public_pages_answer(client, path):
    assert client.get(path, **REMOTE).status_code in (200, 503)


@pytest.mark.django_db
def test_metrics_answer_loopback_or_the_bearer_token(client, settings):
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert client.get("/metrics", **REMOTE).status_code == 403
    settings.METRICS_BEARER_TOKEN = "scrape-token"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **REMOTE).status_code == 403
    allowed = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token", **REMOTE)
    assert allowed.status_code == 200
    assert b"django_http_requests" in allowed.content
