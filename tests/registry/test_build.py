"""Stored versions become real DSPy programs, and read back to the same spec."""

import copy
import typing
import warnings

import dspy
import pytest
from dspy.utils import DummyLM

from registry.exceptions import InvalidSpec
from registry.field_types import field_python_type
from registry.library import SIGNATURES
from registry.programs import program_describe
from registry.services.versions import signature_version_build, signature_version_create

pytestmark = pytest.mark.django_db


def _describe_behaviour(version) -> dict:
    return {key: value for key, value in version.behaviour().items() if key != "lm_defaults"}


def test_the_library_has_what_the_issue_lists(library):
    assert len(library) >= 8
    for name in (
        "qa",
        "qa_with_context",
        "summarize",
        "classify_topic",
        "extract_entities",
        "sentiment",
        "translate",
        "math_word_problem",
    ):
        assert name in library
    qa = library["qa"]
    assert [f["name"] for f in qa.input_fields] == ["question"]
    assert [f["name"] for f in qa.output_fields] == ["answer"]
    assert library["math_word_problem"].module_kind == "ChainOfThought"
    assert library["classify_topic"].output_fields[0]["type"] == "literal"
    assert library["extract_entities"].output_fields[0]["type"] == "list[str]"
    for entry in SIGNATURES:
        assert len(entry["description"]) > 60
        for field in entry["spec"]["input_fields"] + entry["spec"]["output_fields"]:
            assert field["description"], (entry["name"], field["name"])


@pytest.mark.parametrize("name", [entry["name"] for entry in SIGNATURES])
def test_every_library_signature_rebuilds_and_round_trips(library, name):
    version = library[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated DSPy arguments, no shadowed names
        program = signature_version_build(version=version)
    expected_class = (
        dspy.ChainOfThought if version.module_kind == "ChainOfThought" else dspy.Predict
    )
    assert type(program) is expected_class
    signature = (
        program.predict.signature if version.module_kind == "ChainOfThought" else program.signature
    )
    assert signature.instructions == version.instructions
    assert list(signature.input_fields) == [f["name"] for f in version.input_fields]
    declared_outputs = [f["name"] for f in version.output_fields]
    added = ["reasoning"] if version.module_kind == "ChainOfThought" else []
    assert list(signature.output_fields) == added + declared_outputs
    for field in version.fields:
        info = signature.fields[field["name"]]
        assert info.annotation == field_python_type(field)
        assert info.json_schema_extra["desc"] == field["description"]
    assert program_describe(program) | {"lm_defaults": {}} == _describe_behaviour(version) | {
        "lm_defaults": {}
    }


def test_literal_fields_become_typing_literal(library):
    program = signature_version_build(version=library["sentiment"])
    annotation = program.signature.output_fields["sentiment"].annotation
    assert typing.get_origin(annotation) is typing.Literal
    assert typing.get_args(annotation) == ("positive", "negative", "neutral")


def test_each_build_is_a_fresh_module(library):
    first = signature_version_build(version=library["qa"])
    second = signature_version_build(version=library["qa"])
    first.demos.append(dspy.Example(question="q", answer="a"))
    assert second.demos == []


def test_built_program_runs_with_an_lm(library):
    program = signature_version_build(version=library["qa"])
    with dspy.context(lm=DummyLM([{"answer": "Paris"}])):
        assert program(question="Capital of France?").answer == "Paris"
    cot = signature_version_build(version=library["verify_claim"])
    with dspy.context(lm=DummyLM([{"reasoning": "It says so.", "supported": "True"}])):
        result = cot(claim="Water is wet.", evidence="Water is wet.")
    assert result.supported is True


def test_prefix_round_trips_without_deprecation_warnings(make_signature):
    spec = {
        "instructions": "Answer.",
        "input_fields": [{"name": "question", "type": "str", "prefix": "Q:"}],
        "output_fields": [{"name": "answer", "type": "str", "description": "The answer."}],
    }
    version = make_signature("prefixed", versions=1, spec=spec).versions.get()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        program = signature_version_build(version=version)
    assert program.signature.input_fields["question"].json_schema_extra["prefix"] == "Q:"
    assert program_describe(program)["input_fields"] == version.input_fields


@pytest.fixture
def compiled_qa(library):
    """A qa version whose compiled state carries demos and optimised instructions."""
    program = signature_version_build(version=library["qa"])
    program.demos = [
        dspy.Example(question="2+2?", answer="4"),
        dspy.Example(question="Capital of Italy?", answer="Rome"),
    ]
    program.signature = program.signature.with_instructions("Optimised: answer tersely.")
    state = program.dump_state()
    spec = copy.deepcopy(library["qa"].behaviour()) | {"compiled_state": state}
    return signature_version_create(signature=library["qa"].signature, spec=spec).version


def test_compiled_state_is_loaded_on_build(compiled_qa):
    assert compiled_qa.number == 2
    program = signature_version_build(version=compiled_qa)
    assert [dict(demo) for demo in program.demos] == [
        {"question": "2+2?", "answer": "4"},
        {"question": "Capital of Italy?", "answer": "Rome"},
    ]
    assert program.signature.instructions == "Optimised: answer tersely."
    assert program_describe(program)["compiled_state"] == compiled_qa.compiled_state
    assert program_describe(program)["input_fields"] == compiled_qa.input_fields


def test_compiled_state_demos_reach_the_prompt(compiled_qa):
    program = signature_version_build(version=compiled_qa)
    lm = DummyLM([{"answer": "Paris"}])
    with dspy.context(lm=lm):
        program(question="Capital of France?")
    prompt = str(lm.history[-1]["messages"])
    assert "Capital of Italy?" in prompt and "Optimised: answer tersely." in prompt


def test_chain_of_thought_state_round_trips(library):
    version = library["math_word_problem"]
    program = signature_version_build(version=version)
    program.predict.demos = [
        dspy.Example(problem="1 apple plus 2 apples?", reasoning="1+2=3", answer=3.0)
    ]
    spec = copy.deepcopy(version.behaviour()) | {"compiled_state": program.dump_state()}
    stored = signature_version_create(signature=version.signature, spec=spec).version
    rebuilt = signature_version_build(version=stored)
    assert rebuilt.predict.demos[0]["reasoning"] == "1+2=3"
    assert program_describe(rebuilt)["compiled_state"] == stored.compiled_state


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda state: {"predict": state}, "expected predictor state"),
        (lambda state: state | {"signature": {"instructions": "x", "fields": []}}, "must list 2"),
        (lambda state: state | {"lm": {"model": "openai/gpt-4o"}}, "LM configuration"),
        (lambda state: state | {"demos": "none"}, "demos"),
        (lambda state: {"demos": []}, "expected predictor state"),
    ],
)
def test_compiled_state_that_does_not_fit_is_rejected(library, mutate, fragment):
    program = signature_version_build(version=library["qa"])
    spec = copy.deepcopy(library["qa"].behaviour()) | {
        "compiled_state": mutate(program.dump_state())
    }
    with pytest.raises(InvalidSpec) as caught:
        signature_version_create(signature=library["qa"].signature, spec=spec)
    assert fragment in caught.value.errors["compiled_state"][0]
    assert library["qa"].signature.versions.count() == 1
