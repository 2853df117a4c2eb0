"""The registry's field types, each described once.

A type is a `FieldType` member and its `FieldTypeRule`: the Python type the DSPy signature
gets, the JSON values an execution's input of that type accepts, and whether the field lists
choices. The spec validation (`registry.specs`), the program builder and discovery
(`registry.programs`) and the input validation (`registry.inputs`) all read the rules here, so
adding a type means adding a member and its rule in this module (a test checks that every
member has one).
"""

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import models


class FieldType(models.TextChoices):
    STR = "str", "str"
    INT = "int", "int"
    FLOAT = "float", "float"
    BOOL = "bool", "bool"
    LIST_STR = "list[str]", "list[str]"
    DICT = "dict", "dict"
    LITERAL = "literal", "Literal (choices)"


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class FieldTypeRule:
    # The annotation of the signature field; for `literal` it is built from the choices.
    python_type: Any
    # What an input value must be, for error messages ("a string").
    expected: str
    accepts: Callable[[Any], bool]
    # The accepted value as stored and passed to the program (a fresh list, a float).
    normalize: Callable[[Any], Any] = _same
    has_choices: bool = False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        # An integer too large for a float (JSON allows 400 digits) is no finite number here.
        return False


RULES: dict[str, FieldTypeRule] = {
    FieldType.STR: FieldTypeRule(str, "a string", lambda value: isinstance(value, str)),
    FieldType.INT: FieldTypeRule(int, "an integer (a JSON number without a fraction)", _is_int),
    FieldType.FLOAT: FieldTypeRule(float, "a finite number", _is_number, normalize=float),
    FieldType.BOOL: FieldTypeRule(
        bool, "a boolean (true or false)", lambda value: isinstance(value, bool)
    ),
    FieldType.LIST_STR: FieldTypeRule(
        list[str],
        "a list of strings",
        lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value),
        normalize=list,
    ),
    FieldType.DICT: FieldTypeRule(
        dict[str, Any], "an object", lambda value: isinstance(value, dict), normalize=dict
    ),
    FieldType.LITERAL: FieldTypeRule(
        None, "one of the choices", lambda value: isinstance(value, str), has_choices=True
    ),
}


def field_python_type(field: dict[str, Any]) -> Any:
    """The real Python type of a field spec (``typing.Literal[...]`` for choices)."""
    rule = RULES[field["type"]]
    return typing.Literal[tuple(field["choices"])] if rule.has_choices else rule.python_type


def field_type_of(annotation: Any) -> dict[str, Any] | None:
    """The field type (and choices) of a Python annotation, or None outside the registry's
    types. The inverse of `field_python_type`; bare `dict` reads as `dict`."""
    for name, rule in RULES.items():
        if not rule.has_choices and annotation == rule.python_type:
            return {"type": name}
    if annotation is dict or (
        typing.get_origin(annotation) is dict and typing.get_args(annotation)[:1] == (str,)
    ):
        return {"type": FieldType.DICT}
    if typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        if choices and all(isinstance(choice, str) for choice in choices):
            return {"type": FieldType.LITERAL, "choices": choices}
    return None
