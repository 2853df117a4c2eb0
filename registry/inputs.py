"""Validating an execution's inputs against the version it runs: strict JSON types, no parsing.

A validator, not a write: it sits below the services and imports none of them, so the
execution layer can check a request before anything is stored.
"""

from typing import Any

from core.errors import field_error
from registry.exceptions import InputValidationError
from registry.field_types import RULES
from registry.models import SignatureVersion


def field_value_coerce(
    field: dict[str, Any], value: Any
) -> tuple[Any, list[dict[str, str]] | None]:
    """The value as the field's type, or the error. JSON types only; no string parsing."""
    rule = RULES[field["type"]]
    if rule.has_choices:
        choices = field["choices"]
        if not rule.accepts(value):
            return None, field_error(
                "wrong_type",
                f"Expected one of the strings {', '.join(choices)}, got {_json_type_name(value)}.",
            )
        if value not in choices:
            return None, field_error(
                "invalid_choice", f"'{value}' is not one of the choices: {', '.join(choices)}."
            )
        return value, None
    if not rule.accepts(value):
        return None, field_error(
            "wrong_type", f"Expected {rule.expected}, got {_json_type_name(value)}."
        )
    return rule.normalize(value), None


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def signature_version_validate_inputs(
    *, version: SignatureVersion, inputs: dict[str, Any]
) -> dict[str, Any]:
    """Check an execute request's inputs against the version's input fields.

    Every input field is required; a value must already have the field's JSON type (``"3"``
    is not an int, ``1`` is not a bool); a Literal value must be one of the choices. Returns
    the inputs in field order, floats as floats. Raises InputValidationError listing every
    problem at once.
    """
    if not isinstance(inputs, dict):
        raise InputValidationError(
            {
                "non_field_errors": field_error(
                    "wrong_type",
                    f"Inputs must be an object mapping field names to values, "
                    f"got {_json_type_name(inputs)}.",
                )
            }
        )
    errors: dict[str, list[dict[str, str]]] = {}
    known = {field["name"] for field in version.input_fields}
    for name in inputs:
        if name not in known:
            errors[str(name)] = field_error(
                "unknown_field",
                f"'{name}' is not an input of {version}; the inputs are "
                f"{', '.join(field['name'] for field in version.input_fields)}.",
            )
    coerced: dict[str, Any] = {}
    for field in version.input_fields:
        name = field["name"]
        if name not in inputs:
            errors[name] = field_error("missing", f"The input '{name}' is required.")
            continue
        value, problem = field_value_coerce(field, inputs[name])
        if problem:
            errors[name] = problem
        else:
            coerced[name] = value
    if errors:
        raise InputValidationError(errors)
    return coerced
