"""Spec validation: each kind of bad field spec is rejected with a field-level message."""

import inspect
import warnings

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from registry.exceptions import InvalidSpec, errors_flatten
from registry.programs import program_build
from registry.specs import (
    RESERVED_FIELD_NAMES,
    VersionSpec,
    alias_name_problem,
    content_hash,
    field_name_problem,
    name_problem,
    tags_normalize,
    version_spec_validate,
)


def _spec(**overrides) -> dict:
    spec = {
        "instructions": "Answer the question.",
        "input_fields": [{"name": "question", "type": "str"}],
        "output_fields": [{"name": "answer", "type": "str"}],
    }
    return spec | overrides


def _errors(data) -> dict:
    with pytest.raises(InvalidSpec) as caught:
        version_spec_validate(data)
    assert caught.value.code == "invalid_spec"
    return caught.value.errors


def test_valid_spec_is_normalised():
    spec = version_spec_validate(
        _spec(
            output_fields=[
                {"name": "label", "type": "literal", "choices": ["yes", "no"], "description": " x "}
            ]
        )
    )
    assert isinstance(spec, VersionSpec)
    assert spec.module_kind == "Predict"
    assert spec.lm_defaults == {}
    assert spec.input_fields == [
        {"name": "question", "type": "str", "description": "", "prefix": None}
    ]
    assert spec.output_fields == [
        {
            "name": "label",
            "type": "literal",
            "description": "x",
            "prefix": None,
            "choices": ["yes", "no"],
        }
    ]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("2fast", "not a valid Python identifier"),
        ("has space", "not a valid Python identifier"),
        ("naïve", "not a valid Python identifier"),
        ("", "non-empty string"),
        (None, "non-empty string"),
        ("class", "Python keyword"),
        ("_private", "underscore"),
        ("signature", "reserved by DSPy"),
        ("instructions", "reserved by DSPy"),
        ("demos", "reserved by DSPy"),
        ("model_config", "reserved by DSPy"),
        ("model_whatever", "reserved by DSPy"),
        ("x" * 65, "at most 64"),
    ],
)
def test_bad_field_names(name, fragment):
    errors = _errors(_spec(input_fields=[{"name": name, "type": "str"}]))
    assert list(errors) == ["input_fields"]
    assert list(errors["input_fields"][0]) == ["name"]
    assert fragment in errors["input_fields"][0]["name"][0]


def test_duplicate_within_inputs():
    errors = _errors(
        _spec(
            input_fields=[{"name": "question", "type": "str"}, {"name": "question", "type": "int"}]
        )
    )
    assert errors["input_fields"][0] == {}
    assert "used twice" in errors["input_fields"][1]["name"][0]


def test_inputs_and_outputs_share_one_namespace():
    errors = _errors(_spec(output_fields=[{"name": "question", "type": "str"}]))
    assert "share one namespace" in errors["output_fields"][0]["name"][0]
    assert "input_fields" not in errors


@pytest.mark.parametrize("field_type", ["string", "list[int]", "Literal", "", None, 3, "tuple"])
def test_unknown_types(field_type):
    errors = _errors(_spec(input_fields=[{"name": "question", "type": field_type}]))
    assert "Unknown type" in errors["input_fields"][0]["type"][0]
    assert "list[str]" in errors["input_fields"][0]["type"][0]


@pytest.mark.parametrize(
    ("choices", "fragment"),
    [
        (None, "needs `choices`"),
        ([], "needs `choices`"),
        ("a,b", "needs `choices`"),
        (["a", ""], "non-empty string"),
        (["a", 1], "non-empty string"),
        (["a", "a"], "distinct"),
    ],
)
def test_bad_literal_choices(choices, fragment):
    field = {"name": "label", "type": "literal"}
    if choices is not None:
        field["choices"] = choices
    errors = _errors(_spec(output_fields=[field]))
    assert fragment in errors["output_fields"][0]["choices"][0]


def test_choices_only_on_literal():
    errors = _errors(_spec(output_fields=[{"name": "answer", "type": "str", "choices": ["a"]}]))
    assert errors["output_fields"][0]["choices"] == ["Only a `literal` field has choices."]


def test_field_must_be_an_object_and_keys_are_closed():
    errors = _errors(
        _spec(
            input_fields=["question"],
            output_fields=[{"name": "answer", "type": "str", "default": 1}],
        )
    )
    assert "must be an object" in errors["input_fields"][0]["non_field_errors"][0]
    assert "default" in errors["output_fields"][0]["non_field_errors"][0]


def test_description_and_prefix_must_be_strings():
    errors = _errors(
        _spec(input_fields=[{"name": "question", "type": "str", "description": 3, "prefix": ["Q"]}])
    )
    assert errors["input_fields"][0].keys() == {"description", "prefix"}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"instructions": ""}, "instructions"),
        ({"instructions": "   "}, "instructions"),
        ({"instructions": None}, "instructions"),
        ({"input_fields": []}, "input_fields"),
        ({"input_fields": "question"}, "input_fields"),
        ({"output_fields": []}, "output_fields"),
        ({"module_kind": "ReAct"}, "module_kind"),
        ({"lm_defaults": {"temperature": 3}}, "lm_defaults"),
        ({"lm_defaults": {"temperature": True}}, "lm_defaults"),
        ({"lm_defaults": {"max_tokens": 0}}, "lm_defaults"),
        ({"lm_defaults": {"max_tokens": 1.5}}, "lm_defaults"),
        ({"lm_defaults": {"top_k": 3}}, "lm_defaults"),
        ({"lm_defaults": []}, "lm_defaults"),
        ({"compiled_state": []}, "compiled_state"),
        ({"compiled_state": {}}, "compiled_state"),
    ],
)
def test_other_bad_parts(overrides, key):
    assert key in _errors(_spec(**overrides))


def test_every_problem_is_reported_at_once():
    errors = _errors(
        {
            "instructions": "",
            "input_fields": [{"name": "class", "type": "str"}, {"name": "ok", "type": "nope"}],
            "output_fields": [{"name": "ok", "type": "str"}],
            "module_kind": "Nope",
        }
    )
    assert set(errors) == {"instructions", "input_fields", "output_fields", "module_kind"}
    assert "Python keyword" in errors["input_fields"][0]["name"][0]
    assert "Unknown type" in errors["input_fields"][1]["type"][0]


def test_error_message_flattens_paths():
    with pytest.raises(InvalidSpec) as caught:
        version_spec_validate(
            _spec(input_fields=[{"name": "ok", "type": "str"}, {"name": "lm", "type": "str"}])
        )
    assert "input_fields[1].name: `lm` is reserved by DSPy." in str(caught.value)


def test_reserved_names_cover_the_installed_dspy():
    """Every public attribute of dspy.Signature (and its metaclass properties) is reserved."""
    public = {name for name in dir(dspy.Signature) if not name.startswith("_")}
    public |= {
        name for name in dir(type(dspy.Signature)) if not name.startswith("_") and name != "mro"
    }
    uncovered = {
        name
        for name in public
        if name not in RESERVED_FIELD_NAMES and not name.startswith("model_")
    }
    assert uncovered == set()


def _call_path_parameter_names() -> set[str]:
    """The parameter names of the functions a module call passes its inputs through."""
    names = set()
    for owner in (dspy.Module, dspy.Predict, dspy.ChainOfThought):
        for attribute in ("__call__", "acall", "forward", "aforward", "__init__"):
            function = getattr(owner, attribute, None)
            if function is not None:
                names |= set(inspect.signature(function).parameters)
    return names - {"args", "kwargs"}


@pytest.mark.parametrize("module_kind", ["Predict", "ChainOfThought"])
def test_every_input_name_that_breaks_a_call_is_reserved(module_kind):
    """Tries each parameter name of the installed DSPy's call path as an input field: a name
    with which a call does not answer must be refused by the registry."""
    broken = set()
    for name in sorted(_call_path_parameter_names()):
        behaviour = {
            "instructions": "Answer.",
            "input_fields": [{"name": name, "type": "str", "description": "", "prefix": None}],
            "output_fields": [{"name": "answer", "type": "str", "description": "", "prefix": None}],
            "module_kind": module_kind,
            "lm_defaults": {},
            "compiled_state": None,
        }
        lm = DummyLM([{"reasoning": "because", "answer": "yes"}] * 2)
        try:
            with warnings.catch_warnings(), dspy.context(lm=lm):
                warnings.simplefilter("ignore")
                answered = program_build(name="probe", behaviour=behaviour)(**{name: "v"})
            if answered.answer != "yes" or name not in answered_inputs(lm):
                broken.add(name)
        except Exception:
            broken.add(name)
    assert broken, "the probe must find DSPy's own parameter names"
    assert {name for name in broken if field_name_problem(name) is None} == set()


def answered_inputs(lm) -> str:
    """The text of the last prompt the dummy LM saw (an input that never reached it failed)."""
    return str(lm.history[-1]["messages"])


def test_content_hash_is_stable_and_covers_behaviour():
    spec = version_spec_validate(_spec())
    same = version_spec_validate(_spec())
    assert spec.content_hash == same.content_hash
    assert len(spec.content_hash) == 64
    variants = [
        _spec(instructions="Answer briefly."),
        _spec(module_kind="ChainOfThought"),
        _spec(lm_defaults={"temperature": 0.5}),
        _spec(input_fields=[{"name": "question", "type": "str", "description": "Q"}]),
        _spec(input_fields=[{"name": "question", "type": "str", "prefix": "Q:"}]),
        _spec(output_fields=[{"name": "answer", "type": "int"}]),
        _spec(compiled_state={"demos": []}),
    ]
    hashes = {version_spec_validate(variant).content_hash for variant in variants}
    assert len(hashes) == len(variants)
    assert spec.content_hash not in hashes
    # The hash is over content, not over key order or spelling of the defaults.
    reordered = {key: value for key, value in reversed(list(spec.as_dict().items()))}
    assert content_hash(reordered) == spec.content_hash


@pytest.mark.parametrize("name", ["qa", "summarize_v2", "a1"])
def test_good_signature_names(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["QA", "1qa", "qa-2", "", None, "qa.v2", "x" * 101])
def test_bad_signature_names(name):
    assert name_problem(name)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"instructions": "Answer\x00."}, "instructions"),
        ({"input_fields": [{"name": "q", "type": "str", "description": "\x00"}]}, "input_fields"),
        ({"input_fields": [{"name": "q", "type": "str", "prefix": "Q\x00:"}]}, "input_fields"),
        (
            {"output_fields": [{"name": "a", "type": "literal", "choices": ["y", "n\x00"]}]},
            "output_fields",
        ),
        ({"compiled_state": {"demos": [{"q\x00": "x"}]}}, "compiled_state"),
    ],
)
def test_nul_characters_are_refused_because_postgresql_cannot_store_them(overrides, key):
    errors = _errors(_spec(**overrides))
    assert "NUL" in errors_flatten(errors[key])[0]


def test_nul_characters_are_refused_in_tags():
    with pytest.raises(InvalidSpec, match="NUL"):
        tags_normalize(["qa\x00"])


def test_alias_names():
    assert alias_name_problem("production") is None
    assert "implicit" in alias_name_problem("latest")
    assert alias_name_problem("12")
    assert alias_name_problem("Prod")


def test_tags_are_normalised():
    assert tags_normalize([" QA", "rag", "qa", ""]) == ["qa", "rag"]
    with pytest.raises(InvalidSpec):
        tags_normalize("qa")
