from typing import Literal

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from providers.adapters import CompactAdapter
from providers.engines import EngineConfig
from tests.support.engines import ScriptedEngine


class Review(dspy.Signature):
    """Classify the review."""

    text: str = dspy.InputField()
    sentiment: Literal["positive", "negative", "neutral"] = dspy.OutputField()
    count: int = dspy.OutputField()
    score: float = dspy.OutputField()
    keywords: list[str] = dspy.OutputField()
    is_question: bool = dspy.OutputField()


class Extraction(dspy.Signature):
    text: str = dspy.InputField()
    data: dict = dspy.OutputField()
    maybe: int | None = dspy.OutputField()


@pytest.fixture
def adapter() -> CompactAdapter:
    return CompactAdapter()


@pytest.fixture
def scripted_lm() -> dspy.LM:
    config = EngineConfig(
        name="scripted",
        kind="custom",
        model="scripted",
        max_tokens=64,
        temperature=0.0,
        top_p=1.0,
        timeout_s=10,
        hardware_optimization=False,
    )
    return dspy.LM(
        "custom/scripted", engine=ScriptedEngine(config=config), cache=False, num_retries=0
    )


def test_compact_prompt(adapter):
    messages = adapter.format(
        dspy.Signature("question -> answer"), demos=[], inputs={"question": "What is 2 + 2?"}
    )
    assert messages == [
        {"role": "system", "content": "Given the fields `question`, produce the fields `answer`."},
        {"role": "user", "content": "question: What is 2 + 2?"},
        {"role": "assistant", "content": "answer:"},
    ]


def test_system_line_says_what_typed_outputs_look_like(adapter):
    system = adapter.format_system_message(Review)
    assert "\n" not in system
    assert system == (
        "Classify the review. count: a whole number. score: a number. "
        "keywords: a comma-separated list. is_question: yes or no."
    )


def test_choices_are_listed_after_the_inputs(adapter):
    assert adapter.format_user_message_content(Review, {"text": "Fine."}) == (
        "text: Fine.\nChoose the sentiment from: positive, negative, neutral."
    )


def test_a_dict_value_is_prefilled_with_an_opening_brace(adapter):
    messages = adapter.format(Extraction, demos=[], inputs={"text": "t"})
    assert messages[-1] == {"role": "assistant", "content": "data: {"}
    assert adapter._generated_line(dict, '"a": 1}\nmore') == '{"a": 1}'


def test_inputs_are_name_value_lines(adapter):
    signature = dspy.Signature("context: list[str], question, limit: int -> answer")
    content = adapter.format_user_message_content(
        signature, {"context": ["a", "b"], "question": "q?", "limit": 3}
    )
    assert content == "context: a, b\nquestion: q?\nlimit: 3"


def test_complete_demos_become_turns(adapter):
    signature = dspy.Signature("question -> answer")
    messages = adapter.format(
        signature,
        demos=[{"question": "1+1?", "answer": "2"}, {"question": "incomplete"}],
        inputs={"question": "2+2?"},
    )
    assert messages[1:3] == [
        {"role": "user", "content": "question: 1+1?"},
        {"role": "assistant", "content": "answer: 2"},
    ]
    assert len(messages) == 5


def test_later_fields_are_prefilled_after_the_earlier_ones(adapter):
    messages = adapter.field_messages(Review, [], {"text": "t"}, {"sentiment": "positive"}, "count")
    assert messages[-1] == {"role": "assistant", "content": "sentiment: positive\ncount:"}


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("sentiment", " positive", "positive"),
        ("sentiment", " Negative.", "negative"),
        ("sentiment", ' "neutral"', "neutral"),
        ("sentiment", " The review is positive overall", "positive"),
        ("count", " 42", 42),
        ("count", " 1,000 items", 1000),
        ("count", " four", 4),
        ("count", " 7.0", 7),
        ("score", " 0.75", 0.75),
        ("score", " -3", -3.0),
        ("keywords", " alpha, beta ,gamma.", ["alpha", "beta", "gamma"]),
        ("keywords", ' ["a b", "c"]', ["a b", "c"]),
        ("keywords", " - one; - two", ["one", "two"]),
        ("is_question", " Yes.", True),
        ("is_question", " no, it is not", False),
        ("is_question", " true", True),
    ],
)
def test_parse_each_type(adapter, field, text, expected):
    assert adapter.parse_field(Review, field, text) == expected


def test_parse_only_reads_the_first_line(adapter):
    assert (
        adapter.parse_field(dspy.Signature("q -> answer"), "answer", " Paris\nq: next") == "Paris"
    )


def test_parse_dict_and_optional(adapter):
    assert adapter.parse_field(Extraction, "data", ' {"a": 1}') == {"a": 1}
    assert adapter.parse_field(Extraction, "maybe", " none") is None
    assert adapter.parse_field(Extraction, "maybe", " 5") == 5


@pytest.mark.parametrize(
    ("field", "text", "reason"),
    [
        ("sentiment", " angry", "'angry' is not one of positive, negative, neutral."),
        ("count", " many", "'many' is not a number."),
        ("count", " 2.5", "'2.5' is not a whole number."),
        ("score", " high", "'high' is not a number."),
        ("is_question", " perhaps", "'perhaps' is not yes or no."),
        ("keywords", "   ", "the model wrote no value."),
    ],
)
def test_parse_errors(adapter, field, text, reason):
    with pytest.raises(AdapterParseError) as caught:
        adapter.parse_field(Review, field, text)
    assert f"Field {field!r}: {reason}" in str(caught.value)
    assert caught.value.adapter_name == "CompactAdapter"


def test_parse_error_for_bad_json(adapter):
    with pytest.raises(AdapterParseError):
        adapter.parse_field(Extraction, "data", " [1, 2]")


def test_parse_of_a_whole_completion(adapter):
    completion = " positive\ncount: 3\nscore: 0.5\nkeywords: a, b\nis_question: no"
    assert adapter.parse(Review, completion) == {
        "sentiment": "positive",
        "count": 3,
        "score": 0.5,
        "keywords": ["a", "b"],
        "is_question": False,
    }
    with pytest.raises(AdapterParseError, match="Missing output fields: score"):
        adapter.parse(Review, " positive\ncount: 3\nkeywords: a\nis_question: no")


def test_field_by_field_generation(adapter, scripted_lm):
    with dspy.context(lm=scripted_lm, adapter=adapter):
        prediction = dspy.Predict(Review)(text="Great, three stars?")
    assert prediction.toDict() == {
        "sentiment": "positive",
        "count": 3,
        "score": 0.5,
        "keywords": ["alpha", "beta"],
        "is_question": True,
    }
    prefixes = [prefix for _, prefix, _ in ScriptedEngine.requests]
    assert prefixes == [
        "sentiment:",
        "sentiment: positive\ncount:",
        "sentiment: positive\ncount: 3\nscore:",
        "sentiment: positive\ncount: 3\nscore: 0.5\nkeywords:",
        "sentiment: positive\ncount: 3\nscore: 0.5\nkeywords: alpha, beta\nis_question:",
    ]
    configs = [config for _, _, config in ScriptedEngine.requests]
    assert all(config.stop == ("\n",) for config in configs)
    # Short values get a short token budget, other values one line's worth.
    assert [config.max_tokens for config in configs] == [16, 16, 16, 128, 16]


def test_chain_of_thought_writes_reasoning_first(adapter, scripted_lm):
    with dspy.context(lm=scripted_lm, adapter=adapter):
        prediction = dspy.ChainOfThought("question -> answer")(question="Capital of France?")
    assert prediction.reasoning == "it is known"
    assert prediction.answer == "Paris"


def test_callers_stop_sequences_are_kept(adapter, scripted_lm):
    with dspy.context(lm=scripted_lm, adapter=adapter):
        dspy.Predict("question -> answer")(question="q", config={"stop": ["END"]})
    assert ScriptedEngine.requests[0][2].stop == ("END", "\n")


def test_a_value_the_model_cannot_give_raises_a_parse_error(adapter, scripted_lm):
    signature = dspy.Signature(
        {"q": (str, dspy.InputField()), "mood": (Literal["calm", "busy"], dspy.OutputField())}
    )
    with dspy.context(lm=scripted_lm, adapter=adapter), pytest.raises(AdapterParseError):
        dspy.Predict(signature)(q="x")
