"""Fixtures of the evaluations tests: the `qa` signature with a small dataset made through the
ORM, deterministic providers, and a factory of evaluation runs.

The scripted engine (tests/support/engines.py) answers `Paris` to every question, so in
`quiz_dataset` the examples whose expected answer is `Paris` are right and the others wrong.
Every question carries its own call marker, so a counting engine can tell how many times
each example was asked (`engine_calls`).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from providers.models import Provider
from registry.models import Dataset, DatasetExample, SignatureVersion
from registry.services.datasets import dataset_content_hash
from tests.support.engines import BROKEN_ENGINE, COUNTING_ENGINE, FLAKY_ENGINE, call_marker
from tests.support.factories import ProviderFactory, SignatureVersionFactory
from tests.support.specs import QA_SPEC

# (split, question, expected answer, further accepted answers)
QUIZ = [
    ("train", "What is the capital of France?", "Paris", []),
    ("train", "What is the capital of Italy?", "Rome", ["Roma"]),
    ("train", "Which city has the Eiffel Tower?", "Paris", []),
    ("dev", "Where is the Louvre?", "Paris", ["Paris, France"]),
    ("dev", "What is the capital of Spain?", "Madrid", []),
    ("dev", "Which city is the Seine's capital?", "Paris", []),
    ("dev", "What is the capital of Japan?", "Tokyo", []),
    ("dev", "Where is Notre-Dame de Paris?", "paris", []),
    ("test", "What is the capital of Germany?", "Berlin", []),
]
# What the scripted engine gets right on the dev split: 3 of 5 (exact match ignores case).
QUIZ_DEV_RIGHT = 3
QUIZ_DEV_TOTAL = 5


def dataset_make(
    *,
    version: SignatureVersion,
    name: str,
    examples: list[tuple[str, dict, dict, dict]],
) -> Dataset:
    """A dataset of `version`'s signature holding `examples` (split, inputs, outputs,
    accepted), written through the ORM with its counts and content hash."""
    counts: dict[str, int] = {}
    for split, *_ in examples:
        counts[split] = counts.get(split, 0) + 1
    dataset = Dataset.objects.create(
        signature=version.signature,
        name=name,
        content_hash=dataset_content_hash(examples),
        example_count=len(examples),
        split_counts=counts,
        source="tests",
    )
    DatasetExample.objects.bulk_create(
        DatasetExample(
            dataset=dataset,
            position=position,
            split=split,
            inputs=inputs,
            outputs=outputs,
            accepted=accepted,
        )
        for position, (split, inputs, outputs, accepted) in enumerate(examples, start=1)
    )
    return dataset


def quiz_examples(rows=QUIZ) -> list[tuple[str, dict, dict, dict]]:
    """`rows` as dataset examples, each question with a fresh call marker."""
    return [
        (
            split,
            {"question": f"{question} ({call_marker()})"},
            {"answer": answer},
            {"answer": accepted} if accepted else {},
        )
        for split, question, answer, accepted in rows
    ]


@pytest.fixture(autouse=True)
def _evaluations_in_this_thread(settings):
    """Scoring runs in the test's thread, on its transaction: pool threads have connections
    of their own, which see committed rows only. The tests of the thread pool are
    transactional (`django_db(transaction=True)`) and raise `EVALUATIONS_CONCURRENCY` again."""
    settings.EVALUATIONS_CONCURRENCY = 1


@pytest.fixture
def qa_version(db) -> SignatureVersion:
    """Version 1 of the `qa` signature (question: str -> answer: str)."""
    return SignatureVersionFactory(
        signature__name="qa", signature__description="Questions.", spec=QA_SPEC
    )


@pytest.fixture
def quiz_dataset(qa_version) -> Dataset:
    """The `quiz` dataset of `qa`: 3 train, 5 dev (3 of them `Paris`), 1 test example."""
    return dataset_make(version=qa_version, name="quiz", examples=quiz_examples())


@pytest.fixture
def make_dataset(qa_version) -> Callable[..., Dataset]:
    """`make_dataset(name, rows=QUIZ, version=qa_version)`: another dataset, from rows shaped
    like `QUIZ`."""

    def make(name: str, rows=QUIZ, *, version: SignatureVersion | None = None) -> Dataset:
        return dataset_make(version=version or qa_version, name=name, examples=quiz_examples(rows))

    return make


@pytest.fixture
def scripted_provider(db) -> Provider:
    """Answers `Paris` to every question (the compact adapter)."""
    return ProviderFactory(name="scripted")


@pytest.fixture
def broken_provider(db) -> Provider:
    """Fails every call with a server error."""
    return ProviderFactory(name="broken", engine_path=BROKEN_ENGINE)


@pytest.fixture
def calls_log(tmp_path) -> Path:
    """Where `counting_provider` and `flaky_provider` log each call's marker."""
    return tmp_path / "calls.log"


@pytest.fixture
def counting_provider(db, calls_log) -> Provider:
    """Answers `Paris` and logs each call's marker to `calls_log` (`engine_calls`)."""
    return ProviderFactory(name="counting", engine_path=COUNTING_ENGINE, model=str(calls_log))


@pytest.fixture
def flaky_provider(db, calls_log) -> Provider:
    """Like `counting_provider`, but fails the calls whose marker `flaky_fails`."""
    return ProviderFactory(name="flaky", engine_path=FLAKY_ENGINE, model=str(calls_log))


@pytest.fixture
def make_evaluation(qa_version, quiz_dataset, scripted_provider):
    """`make_evaluation(**overrides)`: an evaluation run created by `evaluation_create`, not
    enqueued unless `enqueue=True`; by default `qa` v1 on `quiz`'s dev split with the scripted
    provider and exact match."""
    from evaluations.services.evaluate import evaluation_create

    def make(**overrides: Any):
        arguments = {
            "version": qa_version,
            "dataset": quiz_dataset,
            "split": "dev",
            "provider": scripted_provider,
            "metric": "exact_match",
            "enqueue": False,
        } | overrides
        return evaluation_create(**arguments)

    return make
