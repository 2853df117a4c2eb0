"""What the executions services share: the clock type and the error columns."""

from collections.abc import Callable
from datetime import datetime

from core.secrets import known_secrets, scrub

Clock = Callable[[], datetime]

ERROR_MESSAGE_MAX_LENGTH = 4000


def error_fields(*, error_type: str, code: str, message: str) -> dict[str, str]:
    """The error columns of an execution or an attempt. `message` is what API clients see:
    the toolkit's own words, scrubbed once more in case a caller let a secret in (before it
    is cut, so that no half of a secret escapes the patterns)."""
    return {
        "error_type": error_type[:200],
        "error_code": code[:64],
        "error_message": scrub(message, secrets=known_secrets())[:ERROR_MESSAGE_MAX_LENGTH],
    }
