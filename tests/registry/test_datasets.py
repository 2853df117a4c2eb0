"""Datasets: JSONL and CSV imports checked row by row against a version's fields, all or nothing;
content hashes; exports that import back to the same hash; deletion guarded by runs."""

import csv
import hashlib
import io
import json
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from evaluations.models import EvaluationRun
from registry.exceptions import DatasetExists, DatasetInUse, InvalidDataset
from registry.models import Dataset, DatasetExample
from registry.selectors import dataset_examples
from registry.services.aliases import alias_set
from registry.services.datasets import (
    dataset_content_hash,
    dataset_delete,
    dataset_export,
    dataset_import,
)
from registry.services.versions import signature_version_create
from registry.specs import canonical_json
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db

# Every field type, as inputs and outputs.
TYPED_SPEC = {
    "instructions": "Answer.",
    "input_fields": [
        {"name": "text", "type": "str"},
        {"name": "count", "type": "int"},
        {"name": "weight", "type": "float"},
        {"name": "flag", "type": "bool"},
        {"name": "tags", "type": "list[str]"},
        {"name": "meta", "type": "dict"},
        {"name": "mood", "type": "literal", "choices": ["calm", "angry"]},
    ],
    "output_fields": [
        {"name": "answer", "type": "str"},
        {"name": "label", "type": "literal", "choices": ["yes", "no"]},
        {"name": "score", "type": "float"},
    ],
    "module_kind": "Predict",
}
TYPED_ROW = {
    "text": 'Is it, "quoted"?\nTwo lines.',
    "count": 3,
    "weight": 0.5,
    "flag": True,
    "tags": ["a", "b | c"],
    "meta": {"k": [1, None]},
    "mood": "calm",
    "answer": "Yes",
    "label": "yes",
    "score": 1,
}


def _jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture
def qa(make_signature):
    return make_signature("qa")


@pytest.fixture
def typed(make_signature):
    return make_signature("typed", spec=TYPED_SPEC)


def _problems(exc: pytest.ExceptionInfo) -> list[tuple]:
    return [(p.row, p.field, p.code) for p in exc.value.problems]


# Good files ------------------------------------------------------------------------------------


def test_a_jsonl_import_stores_every_example_in_order(qa, make_user):
    user = make_user()
    content = (
        _jsonl(
            {
                "split": "dev",
                "question": "Capital of Italy?",
                "answer": "Rome",
                "accepted": {"answer": ["Roma"]},
            },
            {"question": "2 + 2?", "answer": "4"},
        )
        + "\n"
    )  # a trailing blank line is no example
    dataset = dataset_import(
        signature=qa, name="starter", content=content.encode(), description="Facts.", user=user
    )
    assert dataset.example_count == 2
    assert dataset.split_counts == {"train": 1, "dev": 1}
    assert dataset.created_by == user and dataset.description == "Facts."
    rows = list(
        dataset_examples(dataset=dataset).values_list(
            "position", "split", "inputs", "outputs", "accepted"
        )
    )
    assert rows == [
        (1, "dev", {"question": "Capital of Italy?"}, {"answer": "Rome"}, {"answer": ["Roma"]}),
        (2, "train", {"question": "2 + 2?"}, {"answer": "4"}, {}),
    ]
    assert [e.position for e in dataset_examples(dataset=dataset, split="dev")] == [1]


def test_the_content_hash_is_sha256_of_the_canonical_examples(qa):
    dataset = dataset_import(
        signature=qa,
        name="d",
        content=_jsonl({"answer": "4", "question": "2 + 2?", "split": "test"}),
    )
    expected = [["test", {"question": "2 + 2?"}, {"answer": "4"}, {}]]
    assert dataset.content_hash == hashlib.sha256(canonical_json(expected).encode()).hexdigest()
    assert dataset.content_hash == dataset_content_hash(
        [("test", {"question": "2 + 2?"}, {"answer": "4"}, {})]
    )


def test_the_hash_is_stable_and_follows_content_order_and_split(qa):
    rows = [{"question": "a?", "answer": "1"}, {"question": "b?", "answer": "2"}]
    first = dataset_import(signature=qa, name="one", content=_jsonl(*rows)).content_hash
    # Key order, the file's encoding and the way rows arrive do not matter...
    reordered = _jsonl(*({"answer": r["answer"], "question": r["question"]} for r in rows))
    assert dataset_import(signature=qa, name="two", content=reordered).content_hash == first
    assert dataset_import(signature=qa, name="three", rows=rows).content_hash == first
    # ...the examples' order and their split do.
    assert dataset_import(signature=qa, name="four", rows=rows[::-1]).content_hash != first
    assert dataset_import(signature=qa, name="five", rows=rows, split="dev").content_hash != first


def test_a_csv_import_reads_each_type_from_its_text(typed):
    header = [
        "split",
        "text",
        "count",
        "weight",
        "flag",
        "tags",
        "meta",
        "mood",
        "answer",
        "label",
        "score",
        "accepted.answer",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerow(
        [
            "dev",
            'Hi, "you"\nthere',
            "-3",
            "2.5",
            "TRUE",
            '["x"]',
            '{"a": 1}',
            "angry",
            "Sure",
            "no",
            "1",
            "Yes | Of course",
        ]
    )
    writer.writerow(["", "", "0", "1e-3", "false", "[]", "{}", "calm", "", "yes", "0", ""])
    dataset = dataset_import(signature=typed, name="d", content=buffer.getvalue(), format="csv")
    first, second = dataset_examples(dataset=dataset)
    assert first.split == "dev" and second.split == "train"
    assert first.inputs == {
        "text": 'Hi, "you"\nthere',
        "count": -3,
        "weight": 2.5,
        "flag": True,
        "tags": ["x"],
        "meta": {"a": 1},
        "mood": "angry",
    }
    assert first.outputs == {"answer": "Sure", "label": "no", "score": 1.0}
    assert first.accepted == {"answer": ["Yes", "Of course"]}
    assert second.inputs["weight"] == 0.001 and second.inputs["flag"] is False
    assert second.outputs["answer"] == "" and second.accepted == {}


def test_the_version_that_checks_is_production_else_latest_else_the_one_named(make_signature):
    signature = make_signature("versions", versions=1)
    wider = {
        **TYPED_SPEC,
        "input_fields": [{"name": "question", "type": "str"}, {"name": "level", "type": "int"}],
        "output_fields": [{"name": "answer", "type": "str"}],
    }
    v2 = signature_version_create(signature=signature, spec=wider).version
    two_inputs = {"question": "q", "level": 1, "answer": "a"}
    one_input = {"question": "q", "answer": "a"}
    # No production alias: the latest version (v2, two inputs) checks.
    dataset_import(signature=signature, name="latest", rows=[two_inputs])
    alias_set(signature=signature, name="production", version=signature.versions.get(number=1))
    with pytest.raises(InvalidDataset):
        dataset_import(signature=signature, name="prod", rows=[two_inputs])
    dataset_import(signature=signature, name="prod", rows=[one_input])
    dataset_import(signature=signature, name="named", rows=[two_inputs], version=v2.number)
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=signature, name="bad", rows=[one_input], version="staging")
    assert _problems(exc) == [(None, "version", "not_found")]


# Bad rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"question": "q", "answer": "a", "answr": "b"}, [(1, "answr", "unknown_field")]),
        ({"question": "q"}, [(1, "answer", "missing")]),
        ({"question": 3, "answer": "a"}, [(1, "question", "wrong_type")]),
        ({"question": "q", "answer": "a", "split": "validation"}, [(1, "split", "invalid_split")]),
        (
            {"question": "q", "answer": "a", "accepted": ["a"]},
            [(1, "accepted", "invalid_accepted")],
        ),
        (
            {"question": "q", "answer": "a", "accepted": {"answer": "b"}},
            [(1, "accepted", "invalid_accepted")],
        ),
        (
            {"question": "q", "answer": "a", "accepted": {"question": ["b"]}},
            [(1, "accepted", "invalid_accepted")],
        ),
        ({"question": "nul\x00", "answer": "a"}, [(1, "question", "invalid_character")]),
        (["q", "a"], [(1, None, "not_an_object")]),
    ],
    ids=[
        "unknown",
        "missing",
        "wrong-type",
        "split",
        "accepted-list",
        "accepted-text",
        "accepted-input",
        "nul",
        "array",
    ],
)
def test_each_bad_row_kind_names_the_row_and_the_field(qa, row, expected):
    good = {"question": "fine?", "answer": "yes"}
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=qa, name="d", content=_jsonl(good, row))
    assert _problems(exc) == [(2, *expected[0][1:])]
    assert exc.value.code == "invalid_dataset" and exc.value.status_code == 400
    assert "row 2" in str(exc.value)


def test_typed_fields_follow_the_execute_input_rules(typed):
    rows = [
        TYPED_ROW | {"count": "3"},  # a string is not an int
        TYPED_ROW | {"count": 1.5},
        TYPED_ROW | {"flag": 1},  # 1 is not a bool
        TYPED_ROW | {"tags": ["a", 2]},
        TYPED_ROW | {"mood": "happy"},
        TYPED_ROW | {"label": "maybe"},  # outputs obey the same rules
        TYPED_ROW | {"accepted": {"label": ["no"]}},  # only str outputs take accepted answers
        TYPED_ROW | {"weight": 10**400},  # no float can hold it
    ]
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=typed, name="d", rows=rows)
    assert _problems(exc) == [
        (1, "count", "wrong_type"),
        (2, "count", "wrong_type"),
        (3, "flag", "wrong_type"),
        (4, "tags", "wrong_type"),
        (5, "mood", "invalid_choice"),
        (6, "label", "invalid_choice"),
        (7, "accepted", "invalid_accepted"),
        (8, "weight", "wrong_type"),
    ]
    assert dataset_import(signature=typed, name="d", rows=[TYPED_ROW]).example_count == 1


def test_bad_csv_cells_header_and_lines(typed):
    header = "text,count,weight,flag,tags,meta,mood,answer,label,score\n"
    good = "t,1,0.5,true,[],{},calm,a,yes,1\n"
    bad_cells = "t,one,nan,yes,[x],{},calm,a,yes,1\n"
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(
            signature=typed, name="d", format="csv", content=header + good + bad_cells + "t,1\n"
        )
    assert _problems(exc) == [
        (2, "count", "wrong_type"),
        (2, "weight", "wrong_type"),
        (2, "flag", "wrong_type"),
        (2, "tags", "wrong_type"),
        (3, None, "wrong_column_count"),
    ]
    bad_header = "text,text,extra,accepted.label,weight,flag,tags,meta,mood,answer,label,score\n"
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=typed, name="d", format="csv", content=bad_header + good)
    assert _problems(exc) == [
        (None, "text", "duplicate_column"),
        (None, "extra", "unknown_field"),
        (None, "accepted.label", "invalid_accepted"),
        (None, "count", "missing"),
    ]


def test_bad_json_encoding_and_empty_files(qa):
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=qa, name="d", content='{"question": "q", "answer": }\n')
    assert _problems(exc) == [(1, None, "invalid_json")]
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=qa, name="d", content=b"\xff\xfe{}")
    assert _problems(exc) == [(None, None, "invalid_encoding")]
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=qa, name="d", content="\n \n")
    assert _problems(exc) == [(None, "content", "empty")]
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=qa, name="Bad Name", content="x", split="holdout", format="xml")
    assert {p.field for p in exc.value.problems} == {"name"}
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=qa, name="d", content="x", split="holdout", format="xml")
    assert {p.field for p in exc.value.problems} == {"split", "format"}


def test_every_problem_is_counted_and_the_first_hundred_listed(qa):
    rows = [{"question": n} for n in range(250)]
    with pytest.raises(InvalidDataset) as exc:
        dataset_import(signature=qa, name="d", rows=rows)
    # Each row: question is no string, answer is missing.
    assert exc.value.problem_count == 500
    assert len(exc.value.problems) == 100
    assert set(exc.value.errors["rows"]) == {str(n) for n in range(1, 51)}
    assert exc.value.errors["rows"]["1"]["answer"][0]["code"] == "missing"
    assert "and 495 more" in str(exc.value)


# All or nothing, replace -------------------------------------------------------------------------


def test_a_bad_row_changes_nothing_and_replace_swaps_everything(qa):
    original = dataset_import(
        signature=qa, name="d", rows=[{"question": "a?", "answer": "1"}], description="First."
    )
    with pytest.raises(DatasetExists):
        dataset_import(signature=qa, name="d", rows=[{"question": "b?", "answer": "2"}])
    bad = [{"question": "b?", "answer": "2"}] * 5000 + [{"question": "c?"}]
    with pytest.raises(InvalidDataset):
        dataset_import(signature=qa, name="d", rows=bad, replace=True)
    with pytest.raises(InvalidDataset):
        dataset_import(signature=qa, name="new", rows=bad)
    assert not Dataset.objects.filter(name="new").exists()
    kept = Dataset.objects.get(pk=original.pk)
    assert (kept.content_hash, kept.example_count) == (original.content_hash, 1)
    assert DatasetExample.objects.count() == 1

    replaced = dataset_import(
        signature=qa,
        name="d",
        rows=[{"question": "b?", "answer": "2"}, {"question": "c?", "answer": "3"}],
        split="dev",
        replace=True,
        source="second.jsonl",
    )
    assert replaced.pk == original.pk
    assert (replaced.example_count, replaced.split_counts) == (2, {"dev": 2})
    assert replaced.description == "First."  # kept when not given
    assert replaced.source == "second.jsonl"
    assert replaced.content_hash != original.content_hash
    assert list(dataset_examples(dataset=replaced).values_list("position", flat=True)) == [1, 2]
    assert DatasetExample.objects.count() == 2


# Export ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["jsonl", "csv"])
def test_export_imports_back_to_the_same_hash(typed, file_format):
    rows = [
        TYPED_ROW | {"split": "dev", "accepted": {"answer": ["Yes indeed", "Yep"]}},
        TYPED_ROW | {"text": "", "count": -7, "weight": 1e-7, "flag": False, "score": 0.25},
        TYPED_ROW | {"split": "test", "tags": [], "meta": {"nested": {"x": "ü"}}},
    ]
    original = dataset_import(signature=typed, name="d", rows=rows)
    text = "".join(dataset_export(dataset=original, format=file_format))
    again = dataset_import(signature=typed, name="again", content=text.encode(), format=file_format)
    assert again.content_hash == original.content_hash
    dev = "".join(dataset_export(dataset=original, format=file_format, split="dev"))
    if file_format == "csv":
        header, *rows = csv.reader(io.StringIO(dev))
        # The columns follow the signature's fields.
        assert header[:3] == ["split", "text", "count"] and header[-1] == "accepted.answer"
        assert len(rows) == 1
    else:
        assert len(dev.splitlines()) == 1


def test_a_jsonl_export_is_the_import_format(qa):
    dataset = dataset_import(
        signature=qa,
        name="d",
        rows=[{"question": "q?", "answer": "a", "accepted": {"answer": ["b"]}}],
    )
    lines = "".join(dataset_export(dataset=dataset)).splitlines()
    assert [json.loads(line) for line in lines] == [
        {"split": "train", "question": "q?", "answer": "a", "accepted": {"answer": ["b"]}}
    ]


# Delete ----------------------------------------------------------------------------------------


def test_a_dataset_that_runs_use_cannot_be_deleted(qa):
    dataset = dataset_import(signature=qa, name="d", rows=[{"question": "q", "answer": "a"}])
    run = EvaluationRun.objects.create(
        signature_version=qa.versions.get(),
        split="train",
        provider=ProviderFactory(),
        metric="exact_match",
        dataset=dataset,
        dataset_hash=dataset.content_hash,
    )
    with pytest.raises(DatasetInUse) as exc:
        dataset_delete(dataset=dataset)
    assert exc.value.status_code == 409 and f"evaluation {run.pk}" in str(exc.value)
    assert DatasetExample.objects.filter(dataset=dataset).count() == 1
    run.delete()
    dataset_delete(dataset=dataset)
    assert not Dataset.objects.exists() and not DatasetExample.objects.exists()


# Size ------------------------------------------------------------------------------------------


def test_ten_thousand_examples_import_through_the_command_with_progress(qa, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(
        _jsonl(
            *(
                {
                    "split": "dev" if n % 5 == 0 else "train",
                    "question": f"What is {n} + 1?",
                    "answer": str(n + 1),
                }
                for n in range(10_000)
            )
        )
    )
    out = io.StringIO()
    started = time.perf_counter()
    call_command("registry_dataset_import", "qa", str(path), "--name", "big", stdout=out)
    elapsed = time.perf_counter() - started
    print(f"10,000-example import through the command: {elapsed:.2f} s")
    dataset = Dataset.objects.get(name="big")
    assert dataset.split_counts == {"train": 8000, "dev": 2000}
    assert DatasetExample.objects.filter(dataset=dataset).count() == 10_000
    text = out.getvalue()
    assert "10000/10000" in text and "4000/10000" in text
    assert dataset.content_hash in text

    exported = tmp_path / "big.csv"
    out = io.StringIO()
    call_command("registry_dataset_export", "qa", "big", "--output", str(exported), stdout=out)
    assert "Exported 10000 examples" in out.getvalue()
    call_command(
        "registry_dataset_import", "qa", str(exported), "--name", "copy", stdout=io.StringIO()
    )
    assert Dataset.objects.get(name="copy").content_hash == dataset.content_hash


def test_the_commands_refuse_bad_input_with_the_rows(qa, tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(_jsonl({"question": "q", "answer": "a"}, {"question": 1, "answer": "a"}))
    with pytest.raises(CommandError) as exc:
        call_command("registry_dataset_import", "qa", str(path), "--name", "d")
    assert "row 2, question: Expected a string" in str(exc.value)
    with pytest.raises(CommandError, match="neither"):
        call_command("registry_dataset_import", "qa", str(tmp_path / "x.txt"), "--name", "d")
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("registry_dataset_import", "qa", str(tmp_path / "x.jsonl"), "--name", "d")
    with pytest.raises(CommandError, match="no signature"):
        call_command("registry_dataset_import", "nope", str(path), "--name", "d")
    with pytest.raises(CommandError, match="no dataset"):
        call_command("registry_dataset_export", "qa", "missing")
    good = tmp_path / "good.jsonl"
    good.write_text(_jsonl({"question": "q", "answer": "a"}))
    call_command("registry_dataset_import", "qa", str(good), "--name", "d", stdout=io.StringIO())
    with pytest.raises(CommandError, match="replace"):
        call_command("registry_dataset_import", "qa", str(good), "--name", "d")
    out = io.StringIO()
    call_command("registry_dataset_export", "qa", "d", "--format", "jsonl", stdout=out)
    assert json.loads(out.getvalue()) == {"split": "train", "question": "q", "answer": "a"}
