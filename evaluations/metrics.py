"""Metrics: how an evaluation or an optimizer scores one prediction against one example.

Every metric follows DSPy's contract, `metric(example, prediction, trace=None)`:
- with `trace=None` (an evaluation) it returns a float in [0, 1];
- with a trace (an optimizer bootstrapping demos) it returns a bool: the score reached the
  `threshold` param (default 1.0, so only a fully right answer becomes a demo).

`metric_resolve` turns a metric name and its params into a `Metric` for one signature version,
checking everything it can before the first example runs: unknown names, unknown or mistyped
params, fields that are not outputs of the version, field types a metric cannot score, an
unknown judge provider, a custom path that cannot be imported. All of them are
`InvalidMetric`. A failure while scoring one example (a custom metric that raises or returns a
value outside [0, 1], a judge that cannot answer, an example without an expected value) is
`MetricFailed`, which the evaluation records as that example's error.

The built-ins score each output field of the version (or the `fields` param) and return the
mean. How each compares a field depends on the field's type:

- text (`str`, `literal`): answers are normalised the SQuAD way (`normalize_answer`) and
  compared with the expected value and every accepted answer of the example, keeping the best;
- `int`, `float`: by value (`4 == 4.0`; a text prediction must be a number and nothing else);
- `bool`: by value (a text prediction may say true/false/yes/no);
- `list[str]`: as a set of normalised items (order and repeats do not count: such outputs
  are tags and keywords, whose order the task does not fix);
- `dict`: same keys, values equal after normalising (text normalised, numbers by value, lists
  inside a dict in order, since there they are data whose order may matter).

A dotted path `package.module.function` names a custom metric: a callable taking
`(example, prediction, trace=None)` and returning a bool or a number in [0, 1]. Its only param
is `threshold`.
"""

import importlib
import inspect
import json
import math
import numbers
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import dspy
from django.conf import settings

from core.errors import ApplicationError, field_error
from providers.calls import provider_call
from providers.exceptions import ProviderNotFound
from providers.models import Provider
from providers.selectors import provider_get
from registry.field_types import FieldType
from registry.models import SignatureVersion

# The hidden key of a `dspy.Example` that carries the example's further accepted answers
# (`{field: [answer, ...]}`); DSPy leaves `dspy_`-prefixed keys out of inputs and demos' text.
ACCEPTED_KEY = "dspy_accepted"

DEFAULT_THRESHOLD = 1.0
DEFAULT_TOLERANCE = 1e-6
# Typed numbers in `exact_match` are equal when they differ by float rounding only.
EXACT_NUMBER_TOLERANCE = 1e-9

TEXT_TYPES = frozenset({FieldType.STR, FieldType.LITERAL})
NUMBER_TYPES = frozenset({FieldType.INT, FieldType.FLOAT})


class InvalidMetric(ApplicationError):
    code = "invalid_metric"
    status_code = 400
    default_message = "The metric or its params are invalid; see `errors`."


class MetricFailed(ApplicationError):
    """One example could not be scored; the evaluation records it as the example's error."""

    code = "metric_failed"
    status_code = 422
    default_message = "The metric could not score this example."


# Normalisation ---------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)
_MINUS_SIGNS = {"\u2212": "-", "\u2013": "-"}


def _is_punctuation(char: str) -> bool:
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize_answer(text: Any) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles (a, an, the), one
    space between words. Two departures, so that numbers survive as numbers: a decimal point
    between digits stays ("3.5" is not "35") and so does a minus sign that starts a number
    ("-4" is not "4"); a thousands comma goes like any punctuation ("1,000" is "1000").
    Unicode is folded (NFKC, casefold) and its punctuation removed too; accents are kept.
    None is the empty answer."""
    if text is None:
        return ""
    folded = unicodedata.normalize("NFKC", str(text)).casefold()
    folded = "".join(_MINUS_SIGNS.get(char, char) for char in folded)
    kept: list[str] = []
    for index, char in enumerate(folded):
        if not _is_punctuation(char):
            kept.append(char)
            continue
        before = folded[index - 1] if index else ""
        after = folded[index + 1] if index + 1 < len(folded) else ""
        decimal_point = char == "." and before.isdigit() and after.isdigit()
        minus = char == "-" and after.isdigit() and (not before or before.isspace())
        if decimal_point or minus:
            kept.append(char)
    return " ".join(_ARTICLES.sub(" ", "".join(kept)).split())


def _tokens(text: Any) -> list[str]:
    return normalize_answer(text).split()


# A number as written in text: thousands commas, a fraction, an exponent. A sign counts only
# at the start or after a space or bracket, so "COVID-19" holds 19, not -19.
_NUMBER = re.compile(
    r"(?:(?:^|(?<=[\s(\[=:]))[-+])?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
)


def first_number(value: Any) -> float | None:
    """The value as a number: itself when it is one, else the first number written in its
    text. Numbers written as words ("four") are not numbers here; neither are fractions
    ("1/2" reads as 1)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    text = "".join(_MINUS_SIGNS.get(char, char) for char in str(value))
    match = _NUMBER.search(text)
    if match is None:
        return None
    number = float(match.group().replace(",", ""))
    return number if math.isfinite(number) else None


def _whole_number(value: Any) -> float | None:
    """The value as a number when it is one, or text that is a number and nothing else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    text = "".join(_MINUS_SIGNS.get(char, char) for char in str(value)).strip().rstrip(".")
    match = _NUMBER.fullmatch(text)
    return float(match.group().replace(",", "")) if match else None


_TRUE_WORDS = frozenset({"true", "yes"})
_FALSE_WORDS = frozenset({"false", "no"})


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = normalize_answer(value)
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _canonical(value: Any) -> Any:
    """A comparable form of a JSON value, tagged by kind so that `True` never equals `1`."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, numbers.Real):
        return ("number", float(value))
    if isinstance(value, str):
        return ("text", normalize_answer(value))
    if isinstance(value, list | tuple):
        return ("list", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(key), _canonical(item)) for key, item in value.items())))
    return ("text", normalize_answer(value))


def _json_value(value: Any, kind: type) -> Any:
    """A prediction that should be a list or dict, read from JSON text when it is text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, kind) else None


def _item_set(value: Any) -> frozenset[str] | None:
    items = _json_value(value, list)
    if items is None:
        return None
    return frozenset(text for item in items if (text := normalize_answer(item)))


# Field comparisons -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldCase:
    """One output field of one example: what to compare."""

    field: dict[str, Any]
    expected: Any
    accepted: tuple[Any, ...]
    predicted: Any
    inputs: dict[str, Any]

    @property
    def type(self) -> str:
        return self.field["type"]

    @property
    def references(self) -> tuple[Any, ...]:
        return (self.expected, *self.accepted)


def _typed_equal(case: FieldCase) -> float:
    """Equality of typed values, the way the module docstring describes for each type."""
    kind = case.type
    if kind in NUMBER_TYPES:
        predicted = _whole_number(case.predicted)
        return float(
            predicted is not None
            and any(
                (reference := _whole_number(value)) is not None
                and math.isclose(
                    predicted,
                    reference,
                    rel_tol=EXACT_NUMBER_TOLERANCE,
                    abs_tol=EXACT_NUMBER_TOLERANCE,
                )
                for value in case.references
            )
        )
    if kind == FieldType.BOOL:
        predicted = _boolean(case.predicted)
        return float(
            predicted is not None and any(_boolean(value) is predicted for value in case.references)
        )
    if kind == FieldType.LIST_STR:
        predicted = _item_set(case.predicted)
        return float(
            predicted is not None
            and any(_item_set(value) == predicted for value in case.references)
        )
    if kind == FieldType.DICT:
        predicted = _json_value(case.predicted, dict)
        return float(
            predicted is not None
            and any(_canonical(value) == _canonical(predicted) for value in case.references)
        )
    predicted_text = normalize_answer(case.predicted)
    return float(any(normalize_answer(value) == predicted_text for value in case.references))


def _exact_match(case: FieldCase, params: dict[str, Any]) -> float:
    return _typed_equal(case)


def _contains_words(haystack: list[str], needle: list[str]) -> bool:
    if not needle:
        return False
    width = len(needle)
    return any(haystack[start : start + width] == needle for start in range(len(haystack)))


def _answer_contains(case: FieldCase, params: dict[str, Any]) -> float:
    exact = _typed_equal(case)
    if exact or case.type not in TEXT_TYPES:
        return exact
    predicted = _tokens(case.predicted)
    max_words = params["max_words"]
    if max_words is not None and len(predicted) > max_words:
        return 0.0
    return float(any(_contains_words(predicted, _tokens(value)) for value in case.references))


def _f1(predicted: list[str] | frozenset[str], reference: list[str] | frozenset[str]) -> float:
    """SQuAD's token F1 (over multisets of tokens, or over sets of list items)."""
    if not predicted or not reference:
        return float(list(predicted) == list(reference))
    common = sum((Counter(predicted) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(reference)
    return 2 * precision * recall / (precision + recall)


def _token_f1(case: FieldCase, params: dict[str, Any]) -> float:
    if case.type == FieldType.LIST_STR:
        predicted = _item_set(case.predicted)
        if predicted is None:
            return 0.0
        scores = [_f1(predicted, items) for value in case.references if (items := _item_set(value))]
        return max(scores, default=float(not predicted))
    if case.type not in TEXT_TYPES:
        return _typed_equal(case)
    predicted = _tokens(case.predicted)
    return max(_f1(predicted, _tokens(value)) for value in case.references)


def _numeric(case: FieldCase, params: dict[str, Any]) -> float:
    if first_number(case.expected) is None:
        raise MetricFailed(
            f"The expected value of {case.field['name']!r}, {case.expected!r}, is not a number."
        )
    predicted = first_number(case.predicted)
    if predicted is None:
        return 0.0
    references = [
        number for value in case.references if (number := first_number(value)) is not None
    ]
    return float(
        any(
            math.isclose(
                predicted,
                reference,
                rel_tol=params["relative_tolerance"],
                abs_tol=params["tolerance"],
            )
            for reference in references
        )
    )


def _label(value: Any) -> str:
    return unicodedata.normalize("NFKC", str(value)).strip().casefold()


def _label_accuracy(case: FieldCase, params: dict[str, Any]) -> float:
    if case.type == FieldType.BOOL:
        return _typed_equal(case)
    if case.predicted is None:
        return 0.0
    predicted = _label(case.predicted)
    return float(any(_label(value) == predicted for value in case.references))


class JudgeSignature(dspy.Signature):
    """Decide whether the predicted answer is correct for the task, using the expected answer
    as the reference. Differences of wording, case or format do not matter; a predicted answer
    that says something else, adds wrong information, or gives no answer is not correct."""

    task_inputs: str = dspy.InputField(desc="The inputs the answer was given for.")
    expected: str = dspy.InputField(desc="The reference answer, with other accepted answers.")
    predicted: str = dspy.InputField(desc="The answer to judge.")
    correct: bool = dspy.OutputField(desc="True when the predicted answer is correct.")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _judge(provider: Provider) -> Callable[[FieldCase, dict[str, Any]], float]:
    def score(case: FieldCase, params: dict[str, Any]) -> float:
        if case.predicted is None or case.predicted == "":
            return 0.0
        expected = _as_text(case.expected)
        if case.accepted:
            expected += " (also accepted: " + "; ".join(map(_as_text, case.accepted)) + ")"
        inputs = {
            "task_inputs": "\n".join(
                f"{name}: {_as_text(value)}" for name, value in case.inputs.items()
            ),
            "expected": f"{case.field['name']}: {expected}",
            "predicted": f"{case.field['name']}: {_as_text(case.predicted)}",
        }
        # An optimizer calls metrics inside its own trace; the judge's call must not be
        # recorded there, or it would become a demo of the program being compiled.
        with dspy.context(trace=None):
            call = provider_call(
                provider=provider, program=dspy.Predict(JudgeSignature), inputs=inputs
            )
        if not call.succeeded:
            raise MetricFailed(f"The judge {provider.name} could not answer: {call.public_message}")
        verdict = call.result.outputs.get("correct")
        if not isinstance(verdict, bool):
            raise MetricFailed(
                f"The judge {provider.name} answered {verdict!r}, not true or false."
            )
        return float(verdict)

    return score


# Params ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    description: str
    default: Any = None
    required: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is not valid for this param, or None."""
        return _PARAM_CHECKS[self.kind](value)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "default": self.default,
            "required": self.required,
            "description": self.description,
        }


def _unit_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return "Expected a number from 0 to 1."
    return None if 0 <= value <= 1 else "Expected a number from 0 to 1."


def _non_negative_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return "Expected a finite number of at least 0."
    return None if value >= 0 else "Expected a finite number of at least 0."


def _positive_integer_or_null(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "Expected a whole number of at least 1, or null for no limit."
    return None


def _field_names(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return "Expected a non-empty list of output field names, or null for every output."
    return None if len(set(value)) == len(value) else "Each field may be named once."


def _name(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "Expected a provider name."


_PARAM_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "number from 0 to 1": _unit_number,
    "number of at least 0": _non_negative_number,
    "integer of at least 1, or null": _positive_integer_or_null,
    "list of output field names": _field_names,
    "provider name": _name,
}

THRESHOLD = Param(
    "threshold",
    "number from 0 to 1",
    "The score an example needs to count as passed when an optimizer asks (trace given); "
    "only passed examples become demos.",
    default=DEFAULT_THRESHOLD,
)
FIELDS = Param(
    "fields",
    "list of output field names",
    "The output fields to score (default: every output field); the score is their mean.",
)


# The built-ins ---------------------------------------------------------------------------------

FieldScorer = Callable[[FieldCase, dict[str, Any]], float]


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    scorer: FieldScorer | None
    params: tuple[Param, ...] = ()
    # The field types it can score; None: every type.
    field_types: frozenset[str] | None = None

    @property
    def all_params(self) -> tuple[Param, ...]:
        return (*self.params, FIELDS, THRESHOLD)


BUILTINS: dict[str, Builtin] = {
    builtin.name: builtin
    for builtin in (
        Builtin(
            "exact_match",
            "1 when the prediction equals the expected value or an accepted answer after "
            "normalisation (case, punctuation, articles a/an/the, spaces; the SQuAD rule), "
            "else 0. Typed fields compare by value; list[str] as a set.",
            _exact_match,
        ),
        Builtin(
            "answer_contains",
            "1 when the normalised prediction contains the expected value or an accepted "
            "answer as whole words ('Paris' in 'the capital is Paris'), else 0; an exact match "
            "always counts. With max_words, a longer prediction that is not an exact match "
            "scores 0, so rambling around the answer is not rewarded. Non-text fields: as "
            "exact_match.",
            _answer_contains,
            (
                Param(
                    "max_words",
                    "integer of at least 1, or null",
                    "The most words (after normalisation) a prediction may have for containing "
                    "the answer to count; null: no limit.",
                ),
            ),
        ),
        Builtin(
            "token_f1",
            "SQuAD token F1 of the normalised prediction against the best of the expected "
            "value and the accepted answers, from 0 to 1. list[str] fields: F1 of the item "
            "sets; other typed fields: as exact_match.",
            _token_f1,
        ),
        Builtin(
            "numeric",
            "1 when the prediction's number equals the expected number (or an accepted one) "
            "within the tolerances, else 0. A text prediction is read for its first number "
            "('about 42 km' is 42); numbers written as words are not numbers.",
            _numeric,
            (
                Param(
                    "tolerance",
                    "number of at least 0",
                    "Absolute tolerance.",
                    default=DEFAULT_TOLERANCE,
                ),
                Param(
                    "relative_tolerance",
                    "number of at least 0",
                    "Relative tolerance, a fraction of the larger of the two numbers; 0: none.",
                    default=0.0,
                ),
            ),
            frozenset({FieldType.INT, FieldType.FLOAT, FieldType.STR}),
        ),
        Builtin(
            "label_accuracy",
            "For literal (label) and bool outputs: 1 when the predicted label equals the "
            "expected one, ignoring case and surrounding spaces, else 0.",
            _label_accuracy,
            field_types=frozenset({FieldType.LITERAL, FieldType.BOOL}),
        ),
        Builtin(
            "llm_judge",
            "Asks the model of another provider whether the prediction is correct, given the "
            "inputs, the expected value and the accepted answers: 1 when it says yes, else 0. "
            "One call per scored field and example, guarded by that provider's breaker.",
            None,
            (Param("provider", "provider name", "The provider that judges.", required=True),),
        ),
    )
}


def metric_catalogue() -> list[dict[str, Any]]:
    """Each built-in metric's name, description and params (for the API, admin and docs)."""
    return [
        {
            "name": builtin.name,
            "description": builtin.description,
            "params": [param.describe() for param in builtin.all_params],
        }
        for builtin in BUILTINS.values()
    ]


# Metrics ---------------------------------------------------------------------------------------


def _in_unit_range(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )


class Metric:
    """A resolved metric, callable with DSPy's metric contract (see the module docstring)."""

    def __init__(
        self,
        *,
        name: str,
        params: dict[str, Any],
        description: str,
        score: Callable[[dspy.Example, Any, Any], float],
    ) -> None:
        self.name = name
        self.params = params
        self.description = description
        self._score = score

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, {self.params!r})"

    def __call__(self, example: dspy.Example, prediction: Any, trace: Any = None) -> float | bool:
        score = self._score(example, prediction, trace)
        if trace is None:
            return score
        return score >= self.params["threshold"]


def _expected(example: dspy.Example, name: str) -> Any:
    value = example.get(name)
    if value is None:
        raise MetricFailed(f"The example has no expected value for the output {name!r}.")
    return value


def _predicted(prediction: Any, name: str) -> Any:
    if prediction is None:
        return None
    if isinstance(prediction, dict | dspy.Example):
        return prediction.get(name)
    raise MetricFailed(
        f"A prediction must be a dspy.Prediction or a dict of outputs, got "
        f"{type(prediction).__name__}."
    )


def _accepted(example: dspy.Example, name: str) -> tuple[Any, ...]:
    accepted = example.get(ACCEPTED_KEY) or {}
    answers = accepted.get(name) if isinstance(accepted, dict) else None
    return tuple(answers) if isinstance(answers, list | tuple) else ()


def _builtin_score(
    scorer: FieldScorer, fields: list[dict[str, Any]], params: dict[str, Any]
) -> Callable[[dspy.Example, Any, Any], float]:
    def score(example: dspy.Example, prediction: Any, trace: Any) -> float:
        try:
            inputs = dict(example.inputs().items())
        except ValueError:  # an example built without `with_inputs`
            inputs = {}
        scores = [
            scorer(
                FieldCase(
                    field=field,
                    expected=_expected(example, field["name"]),
                    accepted=_accepted(example, field["name"]),
                    predicted=_predicted(prediction, field["name"]),
                    inputs=inputs,
                ),
                params,
            )
            for field in fields
        ]
        return sum(scores) / len(scores)

    return score


def _invalid_params(problems: dict[str, str]) -> InvalidMetric:
    """InvalidMetric naming each bad param, under `errors["metric_params"][param]`."""
    return InvalidMetric(
        " ".join(f"{name}: {problem}" for name, problem in problems.items()),
        errors={
            "metric_params": {
                name: field_error("invalid", problem) for name, problem in problems.items()
            }
        },
    )


def _invalid_metric(message: str) -> InvalidMetric:
    """InvalidMetric about the metric's name or path, under `errors["metric"]`."""
    return InvalidMetric(message, errors={"metric": field_error("invalid", message)})


def _checked_params(known: Iterable[Param], params: Any, *, metric: str) -> dict[str, Any]:
    """The params with defaults filled in; InvalidMetric naming every bad or unknown one."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidMetric(
            "The metric's params must be an object.",
            errors={"metric_params": field_error("wrong_type", "Expected an object.")},
        )
    allowed = {param.name: param for param in known}
    problems: dict[str, str] = {}
    for name in params:
        if name not in allowed:
            problems[str(name)] = (
                f"{metric} has no param {name!r}; its params are: {', '.join(allowed)}."
            )
    checked: dict[str, Any] = {}
    for name, param in allowed.items():
        if name not in params:
            if param.required:
                problems[name] = f"{metric} needs the param {name!r}."
            checked[name] = param.default
            continue
        problem = param.problem(params[name])
        if problem:
            problems[name] = problem
        checked[name] = params[name]
    if problems:
        raise _invalid_params(problems)
    return checked


def _scored_fields(
    builtin: Builtin, params: dict[str, Any], version: SignatureVersion
) -> list[dict[str, Any]]:
    outputs = {field["name"]: field for field in version.output_fields}
    names = params["fields"] or list(outputs)
    unknown = [name for name in names if name not in outputs]
    if unknown:
        raise _invalid_params(
            {
                "fields": f"{', '.join(map(repr, unknown))} "
                f"{'is not an output field' if len(unknown) == 1 else 'are not output fields'}; "
                f"the outputs are {', '.join(outputs)}."
            }
        )
    fields = [outputs[name] for name in names]
    if builtin.field_types is not None:
        unfit = [field for field in fields if field["type"] not in builtin.field_types]
        if unfit:
            kinds = ", ".join(sorted(builtin.field_types))
            described = ", ".join(f"{field['name']} ({field['type']})" for field in unfit)
            raise _invalid_params(
                {
                    "fields": f"{builtin.name} scores only {kinds} outputs, not {described}; "
                    f"name other fields with the `fields` param or choose another metric."
                }
            )
    return fields


def _judge_provider(name: str) -> Provider:
    try:
        provider = provider_get(name=name)
    except ProviderNotFound:
        raise _invalid_params({"provider": f"There is no provider named {name!r}."}) from None
    if not provider.enabled:
        raise _invalid_params({"provider": f"The provider {name!r} is disabled."})
    return provider


_DOTTED_PATH = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*[.:][A-Za-z_]\w*$")


def _custom_function(path: str) -> Callable[..., Any]:
    module_name, _, attribute = path.replace(":", ".").rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise _invalid_metric(
            f"The metric {path!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from None
    function = getattr(module, attribute, None)
    if function is None:
        raise _invalid_metric(f"The module {module_name!r} has no attribute {attribute!r}.")
    if inspect.isclass(function) or not callable(function):
        raise _invalid_metric(f"{path!r} is not a function (a callable that is not a class).")
    try:
        inspect.signature(function).bind(None, None, None)
    except TypeError:
        raise _invalid_metric(
            f"{path!r} cannot be called as metric(example, prediction, trace=None)."
        ) from None
    except ValueError:
        pass  # no signature to inspect (some built-ins): its first call will tell.
    return function


def _custom_score(path: str, function: Callable[..., Any]) -> Callable[..., float]:
    def score(example: dspy.Example, prediction: Any, trace: Any) -> float:
        try:
            # Positionally, as DSPy's optimizers call metrics.
            value = function(example, prediction, trace)
        except MetricFailed:
            raise
        except Exception as exc:
            raise MetricFailed(f"The metric {path} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(value, bool):
            return float(value)
        if not _in_unit_range(value):
            raise MetricFailed(
                f"The metric {path} returned {value!r}; a metric returns a bool or a number "
                "from 0 to 1."
            )
        return float(value)

    return score


def _custom_description(path: str, function: Callable[..., Any]) -> str:
    doc = inspect.getdoc(function) or ""
    first_line = doc.strip().split("\n", 1)[0]
    return first_line or f"The custom metric {path}."


def metric_resolve(
    *, name: str, params: dict[str, Any] | None, version: SignatureVersion
) -> Metric:
    """The metric `name` with `params`, ready to score examples of `version`.

    `name` is a built-in (`metric_catalogue()`) or a dotted path to a custom metric function.
    Raises InvalidMetric for anything that would make every example fail.
    """
    if not isinstance(name, str) or not name:
        raise _invalid_metric("Expected a metric name or a dotted path.")
    builtin = BUILTINS.get(name)
    if builtin is not None:
        checked = _checked_params(builtin.all_params, params, metric=name)
        fields = _scored_fields(builtin, checked, version)
        scorer = builtin.scorer or _judge(_judge_provider(checked["provider"]))
        return Metric(
            name=name,
            params=checked,
            description=builtin.description,
            score=_builtin_score(scorer, fields, checked),
        )
    if not _DOTTED_PATH.match(name):
        raise _invalid_metric(
            f"{name!r} is not a built-in metric ({', '.join(BUILTINS)}) nor a dotted path such "
            "as 'package.module.function'."
        )
    module_name = name.replace(":", ".").rpartition(".")[0]
    allowed = settings.EVALUATIONS_CUSTOM_METRIC_MODULES
    if not any(module_name == root or module_name.startswith(f"{root}.") for root in allowed):
        # Resolving a path imports and calls server code, and whoever may create a run may
        # name a metric: only the modules an operator listed are importable this way.
        raise _invalid_metric(
            f"Custom metrics must live in a module listed in EVALUATIONS_CUSTOM_METRIC_MODULES "
            f"({', '.join(allowed) or 'none is'}); {module_name!r} is not."
        )
    checked = _checked_params((THRESHOLD,), params, metric=name)
    function = _custom_function(name)
    return Metric(
        name=name,
        params=checked,
        description=_custom_description(name, function),
        score=_custom_score(name, function),
    )


def dspy_example(
    *,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    accepted: dict[str, list[Any]] | None,
    input_names: list[str],
) -> dspy.Example:
    """A dataset example as DSPy's optimizers and evaluators take it; its accepted answers ride
    along under the hidden key `dspy_accepted`, which the metrics read."""
    return dspy.Example(**inputs, **outputs, **{ACCEPTED_KEY: dict(accepted or {})}).with_inputs(
        *input_names
    )
