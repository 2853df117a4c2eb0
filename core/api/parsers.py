"""The API reads JSON bodies only (`DEFAULT_PARSER_CLASSES`); size is the middleware's.

Beyond JSON syntax, a body is refused (400 `parse_error`) when it nests deeper than
`API_MAX_JSON_DEPTH` or holds a string PostgreSQL cannot store (a NUL character, or a lone
UTF-16 surrogate such as `"\\ud800"`): every later step (hashing, validation, storing) can then
trust its input instead of failing with a 500 half-way.
"""

from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - it is nested too deeply.") from None
        depth = settings.API_MAX_JSON_DEPTH
        if json_depth_exceeds(data, max_depth=depth):
            raise exceptions.ParseError(f"JSON parse error - it nests deeper than {depth} levels.")
        found = unstorable_string(data)
        if found:
            path, problem = found
            error = [
                exceptions.ErrorDetail(f"The text contains {problem}.", code="invalid_character")
            ]
            for key in reversed(path or ["non_field_errors"]):
                error = {str(key): error}
            raise exceptions.ValidationError(error)
        return data


def _children(value: Any):
    if isinstance(value, dict):
        return value.items()
    if isinstance(value, list):
        return enumerate(value)
    return ()


def json_depth_exceeds(data: Any, *, max_depth: int) -> bool:
    """Whether parsed JSON nests objects and lists deeper than `max_depth` (iterative, so no
    depth can exhaust the stack)."""
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > max_depth:
                return True
            pending.extend((child, depth + 1) for _, child in _children(value))
    return False


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (not valid Unicode)"
    return None


def unstorable_string(data: Any) -> tuple[list, str] | None:
    """The path of the first key or string value PostgreSQL cannot store, and why."""
    pending: list[tuple[Any, list]] = [(data, [])]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            problem = _string_problem(value)
            if problem:
                return path, problem
        for key, child in _children(value):
            if isinstance(key, str) and _string_problem(key):
                return [*path, key.encode("unicode_escape").decode()], _string_problem(key)
            pending.append((child, [*path, key]))
    return None
