"""The scrubber, the rule on API key variables, and the logging filter (core.secrets)."""

import json
import logging
import sys
from urllib.parse import quote, quote_plus

import pytest
from django.test import override_settings
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from core import env
from core.secrets import (
    REDACTED,
    ScrubSecretsFilter,
    key_variable_problem,
    known_secrets,
    redact,
    scrub,
)

SECRET = "sk-test-Planted0123456789"
KEY_CHARS = st.characters(codec="ascii", categories=("L", "N"), include_characters="-_.~+/=")
SECRETS = st.text(KEY_CHARS, min_size=8, max_size=40)


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abc123token",
        "authorization: bearer abc123token",
        '{"Authorization": "Bearer abc123token"}',
        "{'authorization': 'Basic YWxhZGRpbjpvcGVuc2VzYW1l'}",
        "Proxy-Authorization: Digest abc123token",
        "api-key: abc123token",
        "x-api-key: abc123token",
        '{"api_key": "abc123token"}',
        "Api-Key abc123token",
        "sent Bearer abc123token to the endpoint",
        "password=abc123token&user=x",
        "https://user:abc123token@example.com/v1",
        "redis://:abc123token@127.0.0.1:6379/0",
        "https://example.com/v1?key=abc123token&model=x",
        "https://example.com/v1?model=x&token=abc123token",
    ],
)
def test_credentials_are_redacted_by_their_shape(text):
    scrubbed = scrub(text)
    assert "abc123token" not in scrubbed
    assert "YWxhZGRpbjpvcGVuc2VzYW1l" not in scrubbed
    assert REDACTED in scrubbed


def test_openai_style_keys_are_redacted_anywhere():
    for key in ("sk-abcdefgh12345678", "sk-proj-abcDEF_123-456xyz", "sk_live_0123456789abcdef"):
        assert scrub(f"key {key} refused.") == f"key {REDACTED} refused."


def test_the_scheme_word_and_the_surroundings_stay():
    assert scrub("Authorization: Bearer abc123token, then") == (
        f"Authorization: Bearer {REDACTED}, then"
    )
    assert (
        scrub("https://user:pw@host.example/v1/chat") == f"https://{REDACTED}@host.example/v1/chat"
    )


def test_ordinary_text_is_left_alone():
    text = "The provider answered HTTP 500 (server error): upstream timeout at 10.0.0.1:8080."
    assert scrub(text) == text
    assert scrub("the authorization header is missing") == "the authorization header is missing"


def test_a_given_secret_is_redacted_in_every_form():
    secret = "p/q+" + SECRET
    for form in (secret, secret.upper(), quote(secret, safe=""), quote_plus(secret)):
        assert scrub(f"got {form} back", secrets=[secret]) == f"got {REDACTED} back"
    quoted = 'k"ey\\' + SECRET
    assert scrub(json.dumps({"detail": quoted}), secrets=[quoted]) == f'{{"detail": "{REDACTED}"}}'


def test_short_or_missing_secrets_are_ignored():
    assert redact("a b c", secrets=["a", "", None]) == "a b c"


def test_redact_removes_only_the_given_values():
    text = "Bearer is a word here, and sk-abcdefgh12345678 an example key."
    assert redact(text, secrets=["not-in-the-text"]) == text
    assert redact(f"the key is {SECRET}.", secrets=[SECRET]) == f"the key is {REDACTED}."


@settings(max_examples=200, deadline=None)
@given(before=st.text(), after=st.text(), secret=SECRETS, separator=st.sampled_from(["", " ", ":"]))
@example(before="Bearer", after="", secret="abcdefgh", separator="")
def test_a_given_secret_never_survives(before, after, secret, separator):
    assume(secret.lower() not in REDACTED)
    text = f"{before}{separator}{secret}{separator}{after}"
    scrubbed = scrub(text, secrets=[secret])
    assert secret not in scrubbed
    assert secret.upper() not in scrub(text.upper(), secrets=[secret])


@settings(max_examples=200, deadline=None)
@given(key=SECRETS, header=st.sampled_from(["Authorization: Bearer ", "api-key: ", "x-api-key: "]))
def test_a_header_value_never_survives(key, header):
    assume(key.lower() not in REDACTED)
    for text in (f"{header}{key}", json.dumps({header.split(":")[0]: header.split(": ")[1] + key})):
        assert key not in scrub(text)


@given(st.text())
def test_scrubbing_is_stable(text):
    once = scrub(text, secrets=[SECRET])
    assert scrub(once, secrets=[SECRET]) == once


# The rule on provider key variables ------------------------------------------------------------


def test_the_default_pattern_admits_the_project_prefix_only():
    assert key_variable_problem("DSPY_TOOLKIT_PROVIDER_KEY_OPENAI") is None
    problem = key_variable_problem("OPENAI_API_KEY")
    assert "PROVIDERS_KEY_ENV_PATTERN" in problem and "PROVIDERS_KEY_ENV_ALLOWED" in problem


@override_settings(PROVIDERS_KEY_ENV_ALLOWED=["OPENAI_API_KEY"])
def test_an_allow_list_admits_other_names():
    assert key_variable_problem("OPENAI_API_KEY") is None


def readme_variables() -> list[str]:
    table = (env.BASE_DIR / "README.md").read_text().split("## Configuration", 1)[1]
    names: list[str] = []
    for line in table.split("\n### ", 1)[0].splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names += [part.strip(" `") for part in first_cell.split(",")]
    return names


@pytest.mark.parametrize("name", ["DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY"])
@override_settings(PROVIDERS_KEY_ENV_PATTERN=".*", PROVIDERS_KEY_ENV_ALLOWED=["DATABASE_URL"])
def test_the_toolkit_s_own_variables_are_refused_whatever_the_settings_say(name):
    assert "one of the toolkit's own settings" in key_variable_problem(name)


def test_every_documented_setting_is_refused():
    names = readme_variables()
    assert "DATABASE_URL" in names and "PROVIDERS_KEY_ENV_PATTERN" in names
    assert [name for name in names if not key_variable_problem(name)] == []
    assert [name for name in names if name not in env.project_names()] == []


@override_settings(PROVIDERS_KEY_ENV_PATTERN=".*")
def test_a_variable_the_toolkit_reads_is_refused_from_then_on():
    name = "DSPY_TOOLKIT_SOME_NEW_SETTING"
    env.READ_NAMES.discard(name)
    assert key_variable_problem(name) is None
    env.get(name)
    assert "toolkit's own settings" in key_variable_problem(name)
    env.READ_NAMES.discard(name)


def test_known_secrets_hold_the_keys_and_the_toolkit_s_own(monkeypatch):
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_TEST", "provider-key-value")
    monkeypatch.setenv("OTHER_VARIABLE", "not-a-key-value")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "the-django-secret-key")
    monkeypatch.setenv("DATABASE_URL", "postgres://app:db-password-value@db:5432/app")
    secrets = known_secrets()
    assert {"provider-key-value", "the-django-secret-key", "db-password-value"} <= set(secrets)
    assert "not-a-key-value" not in secrets


# The logging filter ---------------------------------------------------------------------------


def test_the_configured_handlers_scrub_messages_arguments_and_tracebacks(monkeypatch):
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_TEST", SECRET)
    handler = next(
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(item, ScrubSecretsFilter) for item in handler.filters)
    )
    try:
        raise RuntimeError(f"upstream said {SECRET}")
    except RuntimeError:
        record = logging.getLogger("providers").makeRecord(
            "providers", logging.ERROR, __file__, 1, "call failed: %s", (SECRET,), None
        )
        record.exc_info = sys.exc_info()
    assert handler.filter(record)
    formatted = handler.format(record)
    assert SECRET not in formatted and REDACTED in formatted
    assert "RuntimeError: upstream said" in formatted
    assert record.exc_info is None
