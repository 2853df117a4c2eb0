"""Each field type is described once, in registry.field_types, and the rest follows from it."""

import pytest

from registry.field_types import RULES, FieldType, field_python_type, field_type_of


def test_every_field_type_has_its_rule():
    assert set(RULES) == set(FieldType.values)


@pytest.mark.parametrize("field_type", [value for value in FieldType.values])
def test_python_types_read_back_as_the_same_field_type(field_type):
    field = {"type": field_type, "choices": ["a", "b"] if RULES[field_type].has_choices else None}
    spec = field_type_of(field_python_type(field))
    assert spec["type"] == field_type
    assert spec.get("choices") == field["choices"] if field["choices"] else "choices" not in spec


@pytest.mark.parametrize(
    ("field_type", "accepted", "refused"),
    [
        (FieldType.STR, "x", 1),
        (FieldType.INT, 3, 3.5),
        (FieldType.INT, 3, True),
        (FieldType.FLOAT, 2, float("nan")),
        (FieldType.BOOL, False, 0),
        (FieldType.LIST_STR, ["a"], ["a", 1]),
        (FieldType.DICT, {"a": 1}, [("a", 1)]),
    ],
)
def test_inputs_are_checked_by_json_type(field_type, accepted, refused):
    rule = RULES[field_type]
    assert rule.accepts(accepted)
    assert not rule.accepts(refused)


def test_unknown_annotations_are_outside_the_registry():
    assert field_type_of(list[int]) is None
    assert field_type_of(dict[int, str]) is None
