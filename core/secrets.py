"""Keeping secrets out of every text the toolkit stores, returns or logs.

An upstream endpoint may echo what it received (the `Authorization` header, the URL with its
credentials) in an error body, a status line or a traceback, and that text ends up in error
messages, admin pages and logs. `scrub` removes known secret values (in the forms they take
inside such text) and whatever looks like a credential: `Authorization`/`api-key` header
values, `Bearer` and `Api-Key` tokens, `sk-...` keys, credentials in URLs and their query
strings.

Which environment variables may hold an API key is decided here too (`key_variable_problem`),
so that the logging filter knows every key the toolkit holds without importing the providers.
"""

import json
import logging
import os
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from django.conf import settings

from core import env

REDACTED = "[redacted]"

# Shorter values are not searched for: they would redact ordinary words, and no real key is
# this short.
MIN_SECRET_LENGTH = 6

_VALUE = r"[^\s\"'`,;<>()\[\]{}]+"
_PATTERNS = (
    # Header lines and header-like pairs, as text (`Authorization: Bearer x`), JSON or a
    # Python dict repr (`"authorization": "Bearer x"`), or a form (`api_key=x`). The scheme
    # word of an Authorization value stays, the credential goes (the possessive `?+` keeps
    # an already redacted value from matching with its scheme word taken for the value).
    re.compile(
        r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?"
        r"(?:(?:bearer|basic|digest|token|api-key)\s+)?+)" + _VALUE
    ),
    re.compile(
        r"(?i)(\b(?:x-)?(?:api[-_]?key|access[-_]?token|auth[-_]?token|client[-_]?secret|"
        r"secret[-_]?key|password|passwd)\b[\"']?\s*[:=]\s*[\"']?)" + _VALUE
    ),
    # Bare credentials after their scheme, wherever they appear.
    re.compile(r"(?i)(\b(?:bearer|api-key)\s+)[A-Za-z0-9._~+/=-]{4,}"),
    # OpenAI-style keys (`sk-...`, `sk-proj-...`, `sk_live_...`).
    re.compile(r"()\bsk[-_][A-Za-z0-9_-]{8,}"),
    # Credentials in a URL: `scheme://user:password@host`, and secret-looking query values.
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+(?=@)"),
    re.compile(r"(?i)([?&](?:key|token|sig|signature|secret)=)[^&\s\"'<>#]+"),
)


def _forms(secret: str) -> set[str]:
    """The ways a secret value shows up inside other text: as is, JSON-escaped (an error body
    that quotes it), and percent-encoded (a URL that carries it)."""
    return {secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}


def redact(text: str, *, secrets: Iterable[str | None]) -> str:
    """`text` with each of `secrets` (in any letter case, as is, JSON-escaped or
    percent-encoded) replaced by `[redacted]`, and nothing else changed: for text that may
    legitimately hold credential-like strings, such as a model's answer. Values shorter than
    `MIN_SECRET_LENGTH` are not searched for."""
    if not text:
        return text
    forms: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            forms |= _forms(secret)
    if not forms:
        return text
    # Longest first, so that a secret containing another is removed whole.
    alternatives = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.sub(alternatives, REDACTED, text, flags=re.IGNORECASE)


def scrub(text: str, *, secrets: Iterable[str | None] = ()) -> str:
    """`text` with each of `secrets` (see `redact`) and anything that looks like a credential
    replaced by `[redacted]`: for error text, logs and anything else an upstream wrote."""
    if not text:
        return text
    text = redact(text, secrets=secrets)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + REDACTED, text)
    return text


def key_variable_problem(name: str) -> str | None:
    """Why the environment variable `name` may not hold a provider's API key, or None.

    A key variable matches the `PROVIDERS_KEY_ENV_PATTERN` setting (a regular expression,
    matched in full) or is listed in `PROVIDERS_KEY_ENV_ALLOWED`; the toolkit's own variables
    (`DATABASE_URL`, `DJANGO_SECRET_KEY`, every setting it reads) are refused whatever those
    say, since the key's value is sent to the provider's endpoint.
    """
    if name in env.project_names():
        return (
            f"{name!r} is one of the toolkit's own settings, never an API key variable: its "
            "value would be sent to the provider. Put the key in a variable of its own, e.g. "
            "DSPY_TOOLKIT_PROVIDER_KEY_OPENAI."
        )
    pattern = settings.PROVIDERS_KEY_ENV_PATTERN
    if name in settings.PROVIDERS_KEY_ENV_ALLOWED or re.fullmatch(pattern, name):
        return None
    return (
        f"API key variables must match {pattern} (the PROVIDERS_KEY_ENV_PATTERN setting) or be "
        f"listed in PROVIDERS_KEY_ENV_ALLOWED; {name!r} is neither."
    )


def known_secrets() -> list[str]:
    """Every secret value the toolkit holds: its own (secret key, database and Redis
    passwords) and the value of every variable allowed to hold a provider's API key.

    Read for every log record, so kept until the environment or the settings that decide
    what a key variable is change (a tenth of a millisecond of name checks saved per record).
    """
    global _known
    fingerprint = (
        frozenset(os.environ.items()),
        settings.PROVIDERS_KEY_ENV_PATTERN,
        tuple(settings.PROVIDERS_KEY_ENV_ALLOWED),
        len(env.project_names()),
    )
    known = _known
    if known is None or known[0] != fingerprint:
        secrets = env.secret_values(name_allowed=lambda name: key_variable_problem(name) is None)
        known = _known = (fingerprint, secrets)
    return list(known[1])


_known: tuple[tuple, list[str]] | None = None


class ScrubSecretsFilter(logging.Filter):
    """A handler filter (installed in `LOGGING`) that scrubs every record it passes: message,
    traceback and stack, with the secrets of `known_secrets` and the credential patterns.

    The record is rewritten in place, so the handlers after this one (the test suite's
    capture, for instance) receive the scrubbed text too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = known_secrets()
        try:
            message = record.getMessage()
        except Exception:
            # A malformed logging call must not break the code that made it.
            message = f"{record.msg} {record.args!r}"
        record.msg = scrub(message, secrets=secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, secrets=secrets)
        # The exception itself holds the unscrubbed text: handlers see the formatted copy.
        record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets=secrets)
        return True
