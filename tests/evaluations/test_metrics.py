"""The metrics of evaluations and optimizers (evaluations/metrics.py): each built-in's rule and
edge cases, params validation, custom metrics by dotted path, the LLM judge against a real HTTP
server, and DSPy's own evaluator and optimizer calling them."""

import json
import math

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from evaluations.metrics import (
    BUILTINS,
    InvalidMetric,
    MetricFailed,
    dspy_example,
    first_number,
    metric_catalogue,
    metric_resolve,
    normalize_answer,
)
from registry.models import Signature, SignatureVersion
from tests.support.factories import ProviderFactory
from tests.support.metrics_custom import FIRST_WORD


def field(name: str, kind: str = "str", **extra) -> dict:
    return {"name": name, "type": kind, "description": name, **extra}


def version(*outputs: dict, inputs: tuple[dict, ...] = (field("question"),)) -> SignatureVersion:
    """An unsaved version: metrics read only its fields, so most tests need no database."""
    return SignatureVersion(
        signature=Signature(name="qa"),
        number=1,
        instructions="Answer.",
        input_fields=list(inputs),
        output_fields=list(outputs) or [field("answer")],
    )


QA = version()


def example(accepted: dict | None = None, question: str = "What?", **outputs) -> dspy.Example:
    return dspy_example(
        inputs={"question": question},
        outputs=outputs,
        accepted=accepted or {},
        input_names=["question"],
    )


def score(name: str, expected, predicted, *, kind: str = "str", params=None, accepted=None):
    """The metric's score of one prediction of the single output `answer` of type `kind`."""
    metric = metric_resolve(name=name, params=params, version=version(field("answer", kind)))
    accepted = {"answer": accepted} if accepted else None
    return metric(example(accepted, answer=expected), dspy.Prediction(answer=predicted))


def invalid(name: str, params=None, target: SignatureVersion = QA) -> InvalidMetric:
    with pytest.raises(InvalidMetric) as raised:
        metric_resolve(name=name, params=params, version=target)
    assert raised.value.code == "invalid_metric"
    assert raised.value.status_code == 400
    return raised.value


# Normalisation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Capital is Paris!", "capital is paris"),
        ("  an   apple, a day ", "apple day"),
        ("Theory", "theory"),  # articles are whole words only
        ("3.5", "3.5"),  # a decimal point between digits stays
        ("3.", "3"),
        ("-4 degrees", "-4 degrees"),  # so does a minus that starts a number
        ("well-known", "wellknown"),  # the SQuAD rule: punctuation goes, words join
        ("1,000", "1000"),
        ("«Ça va?» — “oui”", "ça va oui"),  # Unicode punctuation goes, accents stay
        ("\uff30\uff21\uff32\uff29\uff33", "paris"),  # NFKC folds full-width letters
        ("STRASSE", "strasse"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_answer(text, normalised):
    assert normalize_answer(text) == normalised


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("about 42 km", 42.0),
        ("-3", -3.0),
        ("\u22123.5", -3.5),
        ("1,000,000 people", 1_000_000.0),
        ("COVID-19", 19.0),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("four", None),  # numbers written as words are not numbers
        ("", None),
        (None, None),
        (True, None),
        (7, 7.0),
        (math.inf, None),
    ],
)
def test_first_number(text, number):
    assert first_number(text) == number


# exact_match --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "predicted", "accepted", "result"),
    [
        ("Paris", "paris.", None, 1.0),
        ("Paris", "The Paris", None, 1.0),
        ("Rome", "Roma", ["Roma"], 1.0),
        ("Rome", "Rome, Italy", None, 0.0),
        ("Paris", "", None, 0.0),
        ("Paris", None, None, 0.0),
        ("4", "four", None, 0.0),  # numbers as words are not numbers
        ("4", "4.0", None, 0.0),  # in a text field, numbers compare as text
        ("3.5", "35", None, 0.0),
        ("São Paulo", "SÃO PAULO", None, 1.0),
        ("São Paulo", "Sao Paulo", None, 0.0),  # accents are kept: accept both if both are right
    ],
)
def test_exact_match_on_text(expected, predicted, accepted, result):
    assert score("exact_match", expected, predicted, accepted=accepted) == result


@pytest.mark.parametrize(
    ("kind", "expected", "predicted", "result"),
    [
        ("int", 4, 4, 1.0),
        ("int", 4, 4.0, 1.0),
        ("int", 4, "4", 1.0),
        ("int", 4, "4 apples", 0.0),
        ("int", 1, True, 0.0),
        ("int", 4, None, 0.0),
        ("float", 0.3, 0.1 + 0.2, 1.0),
        ("float", 0.3, 0.31, 0.0),
        ("bool", True, True, 1.0),
        ("bool", True, "Yes", 1.0),
        ("bool", False, "true", 0.0),
        ("bool", False, 0, 0.0),
        ("list[str]", ["red", "blue"], ["Blue", "red", "red"], 1.0),  # a set
        ("list[str]", ["red", "blue"], ["red"], 0.0),
        ("list[str]", ["red", "blue"], '["blue", "red"]', 1.0),
        ("list[str]", ["red"], "red", 0.0),
        ("dict", {"city": "Paris", "n": 1}, {"n": 1.0, "city": "paris"}, 1.0),
        ("dict", {"n": 1}, {"n": True}, 0.0),
        (
            "dict",
            {"steps": ["cut", "fry"]},
            {"steps": ["fry", "cut"]},
            0.0,
        ),  # in order inside a dict
        ("dict", {"a": 1}, {"a": 1, "b": 2}, 0.0),
        ("dict", {"a": 1}, '{"a": 1}', 1.0),
        ("literal", "positive", "Positive", 1.0),
    ],
)
def test_exact_match_on_typed_fields(kind, expected, predicted, result):
    assert score("exact_match", expected, predicted, kind=kind) == result


# answer_contains ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "predicted", "params", "accepted", "result"),
    [
        ("Paris", "the capital is paris", None, None, 1.0),
        ("Paris", "Parisian food", None, None, 0.0),  # whole words only
        ("New York", "It is New York City.", None, None, 1.0),
        ("New York", "York is new", None, None, 0.0),
        ("Rome", "it is Roma", None, ["Roma"], 1.0),
        ("Paris", "the capital is paris", {"max_words": 3}, None, 1.0),
        ("Paris", "the capital of France is paris", {"max_words": 3}, None, 0.0),
        ("New York City", "New York City", {"max_words": 1}, None, 1.0),  # exact counts
        ("The", "the cat", None, None, 0.0),  # nothing left to contain after normalising
        ("Paris", "", None, None, 0.0),
        ("Paris", None, None, None, 0.0),
    ],
)
def test_answer_contains(expected, predicted, params, accepted, result):
    assert score("answer_contains", expected, predicted, params=params, accepted=accepted) == result


def test_answer_contains_compares_typed_fields_as_exact_match():
    assert score("answer_contains", 42, "the answer is 42", kind="int") == 0.0
    assert score("answer_contains", 42, 42, kind="int") == 1.0


# token_f1 -----------------------------------------------------------------------------------------


def test_token_f1_is_squads():
    # prediction "capital paris" (after normalising), reference "paris": P 1/2, R 1.
    assert score("token_f1", "Paris", "The capital: Paris") == pytest.approx(2 / 3)
    assert score("token_f1", "Paris", "paris") == 1.0
    assert score("token_f1", "Paris", "London") == 0.0
    assert score("token_f1", "Paris", "") == 0.0
    assert score("token_f1", "Paris", None) == 0.0
    assert score("token_f1", "", "") == 1.0


def test_token_f1_takes_the_best_reference():
    result = score("token_f1", "Rome", "city of roma", accepted=["Roma", "Rome Italy"])
    assert result == pytest.approx(0.5)  # "roma": P 1/3, R 1


def test_token_f1_on_lists_and_typed_fields():
    assert score("token_f1", ["red", "blue"], ["red", "green"], kind="list[str]") == 0.5
    assert score("token_f1", ["red", "blue"], "not a list", kind="list[str]") == 0.0
    assert score("token_f1", 3, 3, kind="int") == 1.0
    assert score("token_f1", 3, 4, kind="int") == 0.0


# numeric ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "predicted", "params", "kind", "result"),
    [
        (42, "about 42 km", None, "int", 1.0),
        (42, 42.0000001, None, "float", 1.0),
        (42, 42.01, None, "float", 0.0),
        (42, "43", {"tolerance": 1}, "int", 1.0),
        (100, 104, {"relative_tolerance": 0.05}, "int", 1.0),
        (100, 106, {"relative_tolerance": 0.05}, "int", 0.0),
        (-3, "-3", None, "int", 1.0),
        (1000, "1,000", None, "int", 1.0),
        (4, "four", None, "int", 0.0),
        (4, None, None, "int", 0.0),
        (4, "", None, "int", 0.0),
        ("12", "12 months", None, "str", 1.0),
    ],
)
def test_numeric(expected, predicted, params, kind, result):
    assert score("numeric", expected, predicted, params=params, kind=kind) == result


def test_numeric_reads_accepted_numbers():
    assert score("numeric", "12", "a dozen, 13", accepted=["13"]) == 1.0


def test_numeric_fails_an_example_whose_expected_value_is_not_a_number():
    with pytest.raises(MetricFailed, match="'twelve', is not a number"):
        score("numeric", "twelve", "12")


@pytest.mark.parametrize("kind", ["bool", "list[str]", "dict"])
def test_numeric_refuses_fields_without_numbers(kind):
    error = invalid("numeric", target=version(field("answer", kind)))
    assert "answer" in error.errors["metric_params"]["fields"][0]["message"]


# label_accuracy -----------------------------------------------------------------------------------

SENTIMENT = field("sentiment", "literal", choices=["positive", "negative"])


@pytest.mark.parametrize(
    ("expected", "predicted", "result"),
    [
        ("positive", "positive", 1.0),
        ("positive", " Positive ", 1.0),
        ("positive", "negative", 0.0),
        ("positive", "positive!", 0.0),
        ("positive", None, 0.0),
        ("positive", "", 0.0),
    ],
)
def test_label_accuracy(expected, predicted, result):
    metric = metric_resolve(name="label_accuracy", params=None, version=version(SENTIMENT))
    assert metric(example(sentiment=expected), {"sentiment": predicted}) == result


def test_label_accuracy_scores_bool_outputs():
    assert score("label_accuracy", True, True, kind="bool") == 1.0
    assert score("label_accuracy", True, "no", kind="bool") == 0.0


def test_label_accuracy_refuses_a_version_without_labels():
    error = invalid("label_accuracy")
    message = error.errors["metric_params"]["fields"][0]["message"]
    assert "label_accuracy scores only bool, literal outputs, not answer (str)" in message


# Several outputs ----------------------------------------------------------------------------------

CITY = version(field("city"), field("population", "int"), field("capital", "bool"))


def city_example() -> dspy.Example:
    return example(city="Paris", population=2_100_000, capital=True)


def test_every_output_field_is_scored_and_averaged():
    metric = metric_resolve(name="exact_match", params=None, version=CITY)
    prediction = dspy.Prediction(city="paris", population=2_000_000, capital="yes")
    assert metric(city_example(), prediction) == pytest.approx(2 / 3)


def test_the_fields_param_picks_the_scored_outputs():
    metric = metric_resolve(name="exact_match", params={"fields": ["city"]}, version=CITY)
    assert metric(city_example(), {"city": "Paris", "population": 0}) == 1.0
    every = metric_resolve(name="exact_match", params={"fields": None}, version=CITY)
    assert every(city_example(), {"city": "Paris", "population": 0}) == pytest.approx(1 / 3)


def test_a_label_metric_may_score_the_label_fields_of_a_mixed_version():
    metric = metric_resolve(name="label_accuracy", params={"fields": ["capital"]}, version=CITY)
    assert metric(city_example(), {"capital": True}) == 1.0
    invalid("label_accuracy", target=CITY)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (["city", "country"], "'country' is not an output field; the outputs are city, "),
        (["question"], "'question' is not an output field"),
        ([], "Expected a non-empty list of output field names, or null"),
        ("city", "Expected a non-empty list of output field names, or null"),
        (["city", "city"], "Each field may be named once."),
    ],
)
def test_the_fields_param_must_name_output_fields(fields, message):
    error = invalid("exact_match", {"fields": fields}, target=CITY)
    assert message in error.errors["metric_params"]["fields"][0]["message"]
    assert "fields" in error.message


def test_an_example_without_an_expected_value_fails():
    metric = metric_resolve(name="exact_match", params=None, version=CITY)
    with pytest.raises(MetricFailed, match="no expected value for the output 'population'"):
        metric(example(city="Paris", capital=True), {"city": "Paris"})


def test_a_prediction_that_is_not_a_mapping_fails():
    metric = metric_resolve(name="exact_match", params=None, version=QA)
    with pytest.raises(MetricFailed, match="got str"):
        metric(example(answer="Paris"), "Paris")
    assert metric(example(answer="Paris"), None) == 0.0


# Params -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "param", "message"),
    [
        ("exact_match", {"tolerance": 1}, "tolerance", "exact_match has no param 'tolerance'"),
        ("numeric", {"tolerence": 1}, "tolerence", "its params are: tolerance, relative_"),
        ("numeric", {"tolerance": "0.1"}, "tolerance", "Expected a finite number of at least 0"),
        ("numeric", {"tolerance": True}, "tolerance", "Expected a finite number"),
        ("numeric", {"tolerance": -1}, "tolerance", "Expected a finite number"),
        ("numeric", {"tolerance": math.nan}, "tolerance", "Expected a finite number"),
        ("numeric", {"relative_tolerance": None}, "relative_tolerance", "Expected a finite"),
        ("token_f1", {"threshold": 1.5}, "threshold", "Expected a number from 0 to 1"),
        ("token_f1", {"threshold": "high"}, "threshold", "Expected a number from 0 to 1"),
        ("answer_contains", {"max_words": 0}, "max_words", "at least 1, or null"),
        ("answer_contains", {"max_words": 2.5}, "max_words", "at least 1, or null"),
        ("llm_judge", {}, "provider", "llm_judge needs the param 'provider'"),
        ("llm_judge", {"provider": 3}, "provider", "Expected a provider name"),
        (FIRST_WORD, {"max_words": 3}, "max_words", "its params are: threshold"),
    ],
)
def test_params_are_validated_strictly(name, params, param, message):
    error = invalid(name, params)
    assert message in error.errors["metric_params"][param][0]["message"]
    assert param in error.message


def test_every_problem_is_named_at_once():
    error = invalid("numeric", {"tolerance": "x", "colour": "red"})
    assert set(error.errors["metric_params"]) == {"tolerance", "colour"}


def test_params_must_be_an_object():
    error = invalid("exact_match", ["threshold"])
    assert error.errors["metric_params"][0]["code"] == "wrong_type"


def test_params_come_back_with_their_defaults():
    metric = metric_resolve(name="numeric", params={"tolerance": 0.5}, version=QA)
    assert metric.params == {
        "tolerance": 0.5,
        "relative_tolerance": 0.0,
        "fields": None,
        "threshold": 1.0,
    }
    assert metric.name == "numeric"
    assert metric.description == BUILTINS["numeric"].description


@pytest.mark.parametrize("name", ["exact", "Exact_Match", "", None, "not a path.x y", ".x"])
def test_an_unknown_metric_is_refused(name):
    error = invalid(name)
    assert "metric" in error.errors


# The optimizer's case: a trace --------------------------------------------------------------------


def test_with_a_trace_a_metric_answers_whether_the_threshold_was_reached():
    prediction = dspy.Prediction(answer="The capital: Paris")  # token F1 2/3
    strict = metric_resolve(name="token_f1", params=None, version=QA)
    lenient = metric_resolve(name="token_f1", params={"threshold": 0.5}, version=QA)
    assert strict(example(answer="Paris"), prediction) == pytest.approx(2 / 3)
    assert strict(example(answer="Paris"), prediction, trace=[]) is False
    assert lenient(example(answer="Paris"), prediction, trace=[]) is True
    exact = metric_resolve(name="exact_match", params=None, version=QA)
    assert exact(example(answer="Paris"), {"answer": "paris"}, []) is True


# Custom metrics -----------------------------------------------------------------------------------


def test_a_custom_metric_by_dotted_path():
    metric = metric_resolve(name=FIRST_WORD, params=None, version=QA)
    assert metric.name == FIRST_WORD
    assert metric.params == {"threshold": 1.0}
    assert metric.description == (
        "1 when the prediction's first word is the expected answer's first word."
    )
    assert metric(example(answer="Paris"), {"answer": "paris is the capital"}) == 1.0
    assert metric(example(answer="Paris"), {"answer": "Lyon"}) == 0.0
    assert metric(example(answer="Paris"), {"answer": "paris"}, trace=[]) is True


def test_a_custom_metric_by_colon_path_with_a_threshold():
    path = "tests.support.metrics_custom:half"
    assert metric_resolve(name=path, params=None, version=QA).description == (
        f"The custom metric {path}."
    )
    half = metric_resolve(name=path, params={"threshold": 0.5}, version=QA)
    assert half(example(answer="x"), {}) == 0.5
    assert half(example(answer="x"), {}, trace=[]) is True
    assert metric_resolve(name=path, params=None, version=QA)(example(answer="x"), {}, []) is False


def test_a_custom_metric_sees_the_trace():
    path = "tests.support.metrics_custom.strict_when_tracing"
    metric = metric_resolve(name=path, params=None, version=QA)
    assert metric(example(answer="x"), {}) == 0.5
    assert metric(example(answer="x"), {}, trace=[]) is True


@pytest.mark.parametrize("path", ["os.system", "testsuite.metric", "json:loads"])
def test_a_custom_metric_outside_the_allowed_modules_is_refused_unimported(path, settings):
    settings.EVALUATIONS_CUSTOM_METRIC_MODULES = ["tests"]
    error = invalid(path)
    assert "EVALUATIONS_CUSTOM_METRIC_MODULES (tests)" in error.errors["metric"][0]["message"]


def test_no_custom_metric_is_allowed_by_default(settings):
    settings.EVALUATIONS_CUSTOM_METRIC_MODULES = []
    assert "none is" in invalid(FIRST_WORD).errors["metric"][0]["message"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.support.no_such_module.metric", "cannot be imported: ModuleNotFoundError"),
        ("tests.support.metrics_custom.missing", "has no attribute 'missing'"),
        ("tests.support.metrics_custom.NOT_CALLABLE", "is not a function"),
        ("tests.support.metrics_custom.MetricClass", "is not a function"),
        ("tests.support.metrics_custom.two_arguments", "metric(example, prediction, trace=None)"),
    ],
)
def test_a_custom_metric_that_cannot_work_is_refused_at_resolve_time(path, message):
    error = invalid(path)
    assert message in error.errors["metric"][0]["message"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("raises", "raised ValueError: the metric broke"),
        ("out_of_range", "returned 1.5; a metric returns a bool or a number from 0 to 1"),
        ("not_a_number", "returned nan"),
        ("text_score", "returned 'yes'"),
    ],
)
def test_a_custom_metric_that_breaks_fails_the_example(name, message):
    metric = metric_resolve(name=f"tests.support.metrics_custom.{name}", params=None, version=QA)
    with pytest.raises(MetricFailed, match=message) as raised:
        metric(example(answer="x"), {"answer": "x"})
    assert raised.value.code == "metric_failed"


# Catalogue and examples ---------------------------------------------------------------------------


def test_the_catalogue_describes_every_builtin():
    catalogue = metric_catalogue()
    assert [entry["name"] for entry in catalogue] == [
        "exact_match",
        "answer_contains",
        "token_f1",
        "numeric",
        "label_accuracy",
        "llm_judge",
    ]
    json.dumps(catalogue)
    by_name = {entry["name"]: entry for entry in catalogue}
    numeric = {param["name"]: param for param in by_name["numeric"]["params"]}
    assert numeric["tolerance"]["default"] == 1e-6
    assert set(numeric) == {"tolerance", "relative_tolerance", "fields", "threshold"}
    judge = {param["name"]: param for param in by_name["llm_judge"]["params"]}
    assert judge["provider"]["required"] is True
    assert all(entry["description"] for entry in catalogue)


def test_dspy_example_hides_the_accepted_answers():
    item = example({"answer": ["Roma"]}, question="Capital of Italy?", answer="Rome")
    assert dict(item.inputs().items()) == {"question": "Capital of Italy?"}
    assert item.answer == "Rome"
    assert "dspy_accepted" not in item.keys()  # noqa: SIM118 (keys() hides dspy_ keys)
    assert item.get("dspy_accepted") == {"answer": ["Roma"]}


# DSPy's own evaluator and optimizer ---------------------------------------------------------------

QUESTIONS = {
    "Capital of France?": ("Paris", "Paris"),
    "Capital of Italy?": ("Rome", "Roma"),  # right by an accepted answer
    "Capital of Spain?": ("Madrid", "Barcelona"),
    "Capital of Peru?": ("Lima", "It is probably Lima or Cusco"),
}


def qa_set() -> list[dspy.Example]:
    return [
        example({"answer": ["Roma"]} if answer == "Rome" else None, question=q, answer=answer)
        for q, (answer, _) in QUESTIONS.items()
    ]


def qa_lm() -> DummyLM:
    return DummyLM({question: {"answer": reply} for question, (_, reply) in QUESTIONS.items()})


def test_dspy_evaluate_averages_the_metric():
    metric = metric_resolve(name="exact_match", params=None, version=QA)
    evaluate = dspy.Evaluate(devset=qa_set(), metric=metric, num_threads=1)
    with dspy.context(lm=qa_lm()):
        result = evaluate(dspy.Predict("question -> answer"))
    assert result.score == 50.0
    assert [score for _, _, score in result.results] == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("name", "params", "demos"),
    [
        ("exact_match", None, ["Capital of France?", "Capital of Italy?"]),
        ("answer_contains", None, ["Capital of France?", "Capital of Italy?", "Capital of Peru?"]),
        ("answer_contains", {"max_words": 3}, ["Capital of France?", "Capital of Italy?"]),
        # "It is probably Lima or Cusco" has a token F1 of 2/7 with "Lima": a demo only when
        # the threshold lets a partial answer pass.
        ("token_f1", None, ["Capital of France?", "Capital of Italy?"]),
        (
            "token_f1",
            {"threshold": 0.25},
            ["Capital of France?", "Capital of Italy?", "Capital of Peru?"],
        ),
    ],
)
def test_bootstrap_few_shot_keeps_the_demos_the_metric_passes(name, params, demos):
    metric = metric_resolve(name=name, params=params, version=QA)
    optimizer = dspy.BootstrapFewShot(
        metric=metric, max_bootstrapped_demos=4, max_labeled_demos=0, max_rounds=1
    )
    with dspy.context(lm=qa_lm()):
        compiled = optimizer.compile(dspy.Predict("question -> answer"), trainset=qa_set())
    assert [demo.question for demo in compiled.demos] == demos


# The LLM judge ------------------------------------------------------------------------------------

VERDICT_TRUE = "[[ ## correct ## ]]\nTrue\n\n[[ ## completed ## ]]"
VERDICT_FALSE = "[[ ## correct ## ]]\nFalse\n\n[[ ## completed ## ]]"


@pytest.fixture
def judge(db, openai_server):
    ProviderFactory(name="judge", kind="openai", base_url=openai_server.base_url)
    return metric_resolve(name="llm_judge", params={"provider": "judge"}, version=QA)


def italy() -> dspy.Example:
    return example({"answer": ["Roma"]}, question="What is the capital of Italy?", answer="Rome")


def test_the_judge_asks_its_provider(judge, openai_server):
    openai_server.content = VERDICT_TRUE
    assert judge(italy(), dspy.Prediction(answer="It is Rome.")) == 1.0
    [request] = openai_server.requests
    prompt = json.dumps(json.loads(request.body)["messages"])
    assert "What is the capital of Italy?" in prompt
    assert "answer: Rome (also accepted: Roma)" in prompt
    assert "answer: It is Rome." in prompt

    openai_server.content = VERDICT_FALSE
    assert judge(italy(), dspy.Prediction(answer="Milan")) == 0.0
    assert judge(italy(), dspy.Prediction(answer="Milan"), trace=[]) is False


def test_the_judge_needs_no_call_for_an_empty_prediction(judge, openai_server):
    assert judge(italy(), dspy.Prediction(answer="")) == 0.0
    assert openai_server.requests == []


def test_the_judge_stays_out_of_an_optimizers_trace(judge, openai_server):
    openai_server.content = VERDICT_TRUE
    with dspy.context(trace=[]):
        trace = dspy.settings.trace
        assert judge(italy(), dspy.Prediction(answer="Rome"), trace) is True
    assert trace == []


@pytest.mark.parametrize(
    ("mode", "message"), [("server_error", "could not answer"), ("malformed", "could not answer")]
)
def test_a_judge_that_fails_fails_the_example(judge, openai_server, mode, message):
    openai_server.mode = mode
    with pytest.raises(MetricFailed, match=f"The judge judge {message}"):
        judge(italy(), dspy.Prediction(answer="Rome"))


def test_a_judge_that_answers_no_verdict_fails_the_example(judge, openai_server):
    openai_server.content = "[[ ## correct ## ]]\nmaybe\n\n[[ ## completed ## ]]"
    with pytest.raises(MetricFailed, match="judge"):
        judge(italy(), dspy.Prediction(answer="Rome"))


@pytest.mark.django_db
def test_the_judge_must_be_an_enabled_provider():
    error = invalid("llm_judge", {"provider": "nobody"})
    assert error.errors["metric_params"]["provider"][0]["message"] == (
        "There is no provider named 'nobody'."
    )
    ProviderFactory(name="off", enabled=False)
    error = invalid("llm_judge", {"provider": "off"})
    assert "disabled" in error.errors["metric_params"]["provider"][0]["message"]
