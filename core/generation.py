"""Generation settings (temperature, top_p, max_tokens, stop): their bounds, checked once.

A signature version's `lm_defaults`, a provider's defaults and an execution request's `config`
all carry these settings. Their bounds live here, and `generation_settings_check` is the one
check of them, so the registry, the providers and the executions cannot drift apart.
"""

import math
from typing import Any

from core.errors import field_error

TEMPERATURE_MIN, TEMPERATURE_MAX = 0.0, 2.0
TOP_P_MIN, TOP_P_MAX = 0.0, 1.0
MAX_TOKENS_MIN = 1
# The most any stored configuration (a provider's default, a version's lm_defaults) may ask
# for. What one execution may ask for is lower: the `EXECUTIONS_MAX_TOKENS_LIMIT` setting.
MAX_TOKENS_CEILING = 32_768
STOP_SEQUENCES_MAX = 4

GENERATION_SETTINGS = ("temperature", "max_tokens", "top_p", "stop")

ErrorList = list[dict[str, str]]


def _number_problem(
    key: str, value: Any, *, low: float, high: float, integer: bool
) -> ErrorList | None:
    expected = (
        f"an integer from {low:g} to {high:g}" if integer else f"a number from {low:g} to {high:g}"
    )
    message = f"'{key}' must be {expected}."
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        return field_error("wrong_type", message)
    if not math.isfinite(value) or not low <= value <= high:
        return field_error("out_of_range", message)
    return None


def _stop_problem(value: Any) -> ErrorList | None:
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or not 1 <= len(stops) <= STOP_SEQUENCES_MAX
        or not all(isinstance(stop, str) and stop for stop in stops)
    ):
        return field_error(
            "wrong_type",
            f"'stop' must be a non-empty string or a list of 1 to {STOP_SEQUENCES_MAX} "
            "non-empty strings.",
        )
    return None


def generation_settings_check(
    settings: Any,
    *,
    allowed: tuple[str, ...] = GENERATION_SETTINGS,
    max_tokens_limit: int = MAX_TOKENS_CEILING,
) -> tuple[dict[str, Any], dict[str, ErrorList]]:
    """The settings normalised (temperature and top_p as floats, stop as a list), and the
    problems of each key as `{key: [{"code", "message"}]}` (empty when valid).

    Only the keys in `allowed` may appear; `max_tokens` may be at most `max_tokens_limit`.
    """
    if settings is None:
        return {}, {}
    if not isinstance(settings, dict):
        return {}, {
            "non_field_errors": field_error(
                "wrong_type", f"Expected an object with optional {', '.join(allowed)}."
            )
        }
    normalized: dict[str, Any] = {}
    errors: dict[str, ErrorList] = {}
    for key, value in settings.items():
        if key not in allowed:
            problem = field_error(
                "unknown_field",
                f"'{key}' is not a setting here; use {', '.join(allowed)}.",
            )
        elif key == "temperature":
            problem = _number_problem(
                key, value, low=TEMPERATURE_MIN, high=TEMPERATURE_MAX, integer=False
            )
        elif key == "top_p":
            problem = _number_problem(key, value, low=TOP_P_MIN, high=TOP_P_MAX, integer=False)
        elif key == "max_tokens":
            problem = _number_problem(
                key, value, low=MAX_TOKENS_MIN, high=max_tokens_limit, integer=True
            )
        else:
            problem = _stop_problem(value)
        if problem:
            errors[str(key)] = problem
        elif key in ("temperature", "top_p"):
            normalized[key] = float(value)
        elif key == "stop":
            normalized[key] = [value] if isinstance(value, str) else list(value)
        else:
            normalized[key] = value
    return normalized, errors
