"""Adding versions, moving aliases, and strict input validation."""

import copy

import pytest

from registry.exceptions import (
    AliasConflict,
    AliasNotFound,
    InputValidationError,
    InvalidSpec,
    SignatureAlreadyExists,
    VersionNotFound,
)
from registry.inputs import signature_version_validate_inputs
from registry.models import AliasChange
from registry.services.aliases import alias_remove, alias_set
from registry.services.signatures import signature_create, signature_update
from registry.services.versions import signature_version_create

pytestmark = pytest.mark.django_db


def test_versions_are_numbered_in_order(make_signature, qa_spec, make_user):
    signature = make_signature(versions=0)
    author = make_user()
    first = signature_version_create(signature=signature, spec=qa_spec, author=author)
    qa_spec["instructions"] = "Answer in one word."
    second = signature_version_create(signature=signature, spec=qa_spec, changelog=" Shorter. ")
    assert (first.created, first.version.number, first.version.author) == (True, 1, author)
    assert (second.created, second.version.number, second.version.changelog) == (
        True,
        2,
        "Shorter.",
    )


def test_same_content_as_latest_creates_nothing(make_signature, qa_spec):
    signature = make_signature(versions=0)
    first = signature_version_create(signature=signature, spec=qa_spec)
    again = signature_version_create(signature=signature, spec=copy.deepcopy(qa_spec))
    assert again.created is False
    assert again.version.pk == first.version.pk
    assert signature.versions.count() == 1


def test_reverting_to_an_older_content_is_a_new_version(make_signature, qa_spec):
    signature = make_signature(versions=0)
    original = signature_version_create(signature=signature, spec=qa_spec).version
    changed = copy.deepcopy(qa_spec) | {"instructions": "Different."}
    signature_version_create(signature=signature, spec=changed)
    reverted = signature_version_create(signature=signature, spec=qa_spec)
    assert reverted.created and reverted.version.number == 3
    assert reverted.version.content_hash == original.content_hash


def test_invalid_spec_writes_nothing(make_signature, qa_spec):
    signature = make_signature(versions=0)
    qa_spec["output_fields"] = [{"name": "answer", "type": "tuple"}]
    with pytest.raises(InvalidSpec) as caught:
        signature_version_create(signature=signature, spec=qa_spec)
    assert "type" in caught.value.errors["output_fields"][0]
    assert signature.versions.count() == 0


def test_signature_create_validates_and_refuses_duplicates(make_signature):
    make_signature("qa", versions=0)
    with pytest.raises(SignatureAlreadyExists):
        signature_create(name="qa")
    with pytest.raises(InvalidSpec) as caught:
        signature_create(name="Bad Name", tags="x")
    assert set(caught.value.errors) == {"name", "tags"}


def test_signature_update_changes_documentation_only(make_signature):
    signature = make_signature(versions=1)
    signature_update(signature=signature, description=" New. ", tags=["B", "a"])
    signature.refresh_from_db()
    assert (signature.description, signature.tags) == ("New.", ["a", "b"])


def test_alias_set_move_and_history(make_signature, make_user):
    signature = make_signature(versions=3)
    v1, v2, v3 = signature.versions.order_by("number")
    user = make_user()
    created = alias_set(signature=signature, name="production", version=v1, user=user)
    assert (created.changed, created.previous) == (True, None)
    moved = alias_set(signature=signature, name="production", version=v3)
    assert (moved.changed, moved.previous, moved.alias.version) == (True, v1, v3)
    same = alias_set(signature=signature, name="production", version=v3)
    assert same.changed is False
    history = list(
        AliasChange.objects.filter(signature=signature)
        .order_by("id")
        .values_list("from_version__number", "to_version__number", "changed_by__username")
    )
    assert history == [(None, 1, "operator"), (1, 3, None)]
    alias_remove(signature=signature, name="production")
    assert not signature.aliases.exists()
    assert AliasChange.objects.filter(signature=signature).latest("id").to_version is None
    with pytest.raises(AliasNotFound):
        alias_remove(signature=signature, name="production")
    assert v2.number == 2


def test_alias_compare_and_set(make_signature):
    signature = make_signature(versions=3)
    v1, v2, v3 = signature.versions.order_by("number")
    alias_set(signature=signature, name="production", version=v1, expected_version=None)
    with pytest.raises(AliasConflict):
        alias_set(signature=signature, name="production", version=v2, expected_version=None)
    alias_set(signature=signature, name="production", version=v2, expected_version=1)
    with pytest.raises(AliasConflict) as caught:
        alias_set(signature=signature, name="production", version=v3, expected_version=1)
    assert caught.value.code == "alias_conflict"
    assert "points at version 2" in str(caught.value)
    assert signature.aliases.get().version == v2


def test_alias_rules(make_signature):
    signature = make_signature(versions=1)
    other = make_signature("other", versions=1)
    with pytest.raises(InvalidSpec):
        alias_set(signature=signature, name="latest", version=signature.versions.get())
    with pytest.raises(InvalidSpec):
        alias_set(signature=signature, name="Prod!", version=signature.versions.get())
    with pytest.raises(VersionNotFound):
        alias_set(signature=signature, name="production", version=other.versions.get())


TYPED_SPEC = {
    "instructions": "Exercise every type.",
    "input_fields": [
        {"name": "text", "type": "str"},
        {"name": "count", "type": "int"},
        {"name": "ratio", "type": "float"},
        {"name": "strict", "type": "bool"},
        {"name": "keys", "type": "list[str]"},
        {"name": "options", "type": "dict"},
        {"name": "tone", "type": "literal", "choices": ["formal", "casual"]},
    ],
    "output_fields": [{"name": "result", "type": "str"}],
}
GOOD_INPUTS = {
    "text": "hello",
    "count": 3,
    "ratio": 1,
    "strict": False,
    "keys": ["a", "b"],
    "options": {"x": 1},
    "tone": "formal",
}


@pytest.fixture
def typed_version(make_signature):
    return make_signature("typed", versions=1, spec=TYPED_SPEC).versions.get()


def test_valid_inputs_come_back_typed_and_in_field_order(typed_version):
    inputs = dict(reversed(list(GOOD_INPUTS.items())))
    coerced = signature_version_validate_inputs(version=typed_version, inputs=inputs)
    assert list(coerced) == list(GOOD_INPUTS)
    assert coerced["ratio"] == 1.0 and isinstance(coerced["ratio"], float)
    assert coerced == GOOD_INPUTS | {"ratio": 1.0}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("text", 3),
        ("text", None),
        ("count", "3"),
        ("count", 3.0),
        ("count", True),
        ("ratio", "1.5"),
        ("ratio", False),
        ("ratio", float("nan")),
        ("strict", 1),
        ("strict", "true"),
        ("keys", "a"),
        ("keys", ["a", 1]),
        ("options", ["x"]),
        ("options", "{}"),
        ("tone", 1),
    ],
)
def test_wrong_types_are_rejected_not_coerced(typed_version, field, value):
    with pytest.raises(InputValidationError) as caught:
        signature_version_validate_inputs(
            version=typed_version, inputs=GOOD_INPUTS | {field: value}
        )
    assert caught.value.code == "invalid_inputs"
    assert list(caught.value.errors) == [field]
    assert caught.value.errors[field][0]["code"] == "wrong_type"
    assert caught.value.errors[field][0]["message"].startswith("Expected")


def test_invalid_choice(typed_version):
    with pytest.raises(InputValidationError) as caught:
        signature_version_validate_inputs(
            version=typed_version, inputs=GOOD_INPUTS | {"tone": "rude"}
        )
    assert caught.value.errors == {
        "tone": [
            {
                "code": "invalid_choice",
                "message": "'rude' is not one of the choices: formal, casual.",
            }
        ]
    }


def test_missing_and_unknown_fields_all_reported(typed_version):
    inputs = {key: value for key, value in GOOD_INPUTS.items() if key != "count"} | {"extra": 1}
    with pytest.raises(InputValidationError) as caught:
        signature_version_validate_inputs(version=typed_version, inputs=inputs)
    assert caught.value.errors["count"][0]["code"] == "missing"
    assert caught.value.errors["extra"][0]["code"] == "unknown_field"
    assert set(caught.value.errors) == {"count", "extra"}


def test_inputs_must_be_an_object(typed_version):
    with pytest.raises(InputValidationError) as caught:
        signature_version_validate_inputs(version=typed_version, inputs=["hello"])
    assert caught.value.errors["non_field_errors"][0]["code"] == "wrong_type"
