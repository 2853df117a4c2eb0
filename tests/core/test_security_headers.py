"""Every page carries a Content-Security-Policy that allows nothing from another host."""

import re

import pytest

PAGES = ["/admin/login/", "/api/docs/", "/api/redoc/", "/api/schema/", "/health/live"]


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_every_page_has_a_policy_without_other_hosts(client, path):
    response = client.get(path)
    assert response.status_code == 200
    policy = _policy(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    for values in policy.values():
        for value in values:
            assert not re.match(r"https?:|\*", value), (path, value)
    assert "'unsafe-inline'" not in policy["script-src"]


@pytest.mark.django_db
def test_api_errors_carry_it_too(client):
    assert "Content-Security-Policy" in client.get("/api/v1/signatures/")


@pytest.mark.django_db
def test_the_one_inline_script_carries_the_nonce(client):
    """ReDoc's start-up script runs under the policy's nonce; Swagger UI's is a file."""
    redoc = client.get("/api/redoc/")
    nonce = re.search(r"'nonce-([^']+)'", redoc["Content-Security-Policy"]).group(1)
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", redoc.content.decode())
    assert inline == [f' nonce="{nonce}"']
    swagger = client.get("/api/docs/").content.decode()
    assert not re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", swagger)
    script = re.search(r'<script src="([^"]*\?script=[^"]*)"', swagger)
    assert script and client.get(script.group(1).replace("&amp;", "&")).status_code == 200
