"""Custom metrics the tests name by dotted path (`tests.support.metrics_custom.<name>`), each
keeping or breaking the contract of `evaluations.metrics` on purpose."""

import math

FIRST_WORD = "tests.support.metrics_custom.first_word"


def first_word(example, prediction, trace=None):
    """1 when the prediction's first word is the expected answer's first word."""
    expected = str(example.answer).split()
    predicted = str(prediction.get("answer") or "").split()
    return float(bool(expected and predicted and expected[0].lower() == predicted[0].lower()))


def half(example, prediction, trace=None):
    return 0.5


def strict_when_tracing(example, prediction, trace=None):
    """Scores 0.5 in an evaluation; when an optimizer asks (a trace), answers True itself."""
    return 0.5 if trace is None else True


def out_of_range(example, prediction, trace=None):
    return 1.5


def not_a_number(example, prediction, trace=None):
    return math.nan


def text_score(example, prediction, trace=None):
    return "yes"


def raises(example, prediction, trace=None):
    raise ValueError("the metric broke")


def two_arguments(example, prediction):
    return 1.0


class MetricClass:
    def __init__(self, example, prediction, trace=None) -> None:
        pass


NOT_CALLABLE = 0.5
