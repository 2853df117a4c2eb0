"""The template library's data: starter datasets and shipped optimized versions, loaded by
`library_load` (from a temporary data directory here, and the shipped one at the end)."""

import copy
import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from registry import library
from registry.exceptions import ImportFileError
from registry.models import Alias, Dataset, Signature, VersionScore
from registry.programs import program_build
from registry.services.datasets import dataset_content_hash
from registry.services.library import LIBRARY_DATA_DIR, library_load
from registry.specs import version_spec_validate
from tests.support.specs import QA_SPEC

pytestmark = pytest.mark.django_db

ENTRY = {"name": "qa", "description": "Questions.", "tags": ["qa"], "spec": QA_SPEC}
ROWS = [
    {
        "split": "train",
        "question": "What is 2 + 2?",
        "answer": "4",
        "accepted": {"answer": ["four"]},
    },
    {"split": "dev", "question": "What is the capital of Italy?", "answer": "Rome"},
]


def _write_rows(directory: Path, rows: list[dict]) -> None:
    (directory / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _compiled(dataset_hash: str, **overrides) -> dict:
    state = program_build(
        name="qa", behaviour=version_spec_validate(QA_SPEC).as_dict()
    ).dump_state()
    state["demos"] = [{"question": "What is 3 + 3?", "answer": "6"}]
    return {
        "optimizer": "bootstrap_few_shot",
        "params": {"max_bootstrapped_demos": 4},
        "seed": 0,
        "metric": "exact_match",
        "metric_params": {},
        "dataset": "starter",
        "dataset_hash": dataset_hash,
        "template_hash": version_spec_validate(QA_SPEC).content_hash,
        "train_split": "train",
        "dev_split": "dev",
        "model": "SmolLM2-135M-Instruct",
        "baseline": {"score": 0.4, "examples": 50, "ci_low": 0.27, "ci_high": 0.54},
        "result": {"score": 0.74, "examples": 50, "ci_low": 0.61, "ci_high": 0.85},
        "compiled_state": state,
        "built_at": "2026-12-03T15:00:00Z",
        "command": "python manage.py evaluations_optimize_library qa",
    } | overrides


def _write_compiled(directory: Path, document: dict) -> None:
    (directory / "qa.compiled.json").write_text(json.dumps(document))


def _load(directory: Path):
    (outcome,) = library_load(entries=[copy.deepcopy(ENTRY)], data_dir=directory)
    return outcome


def test_a_starter_dataset_is_loaded_and_reimported_only_when_it_changed(tmp_path):
    _write_rows(tmp_path, ROWS)
    outcome = _load(tmp_path)
    assert outcome.status == "created" and "dataset starter imported (2 examples)" in outcome.detail
    dataset = Dataset.objects.get(signature__name="qa", name="starter")
    assert dataset.split_counts == {"train": 1, "dev": 1}
    assert dataset.source == "library: qa.jsonl"
    assert Alias.objects.get(name="production").version.number == 1

    again = _load(tmp_path)
    assert (again.status, again.detail) == ("unchanged", "matches version 1")
    assert Dataset.objects.get(pk=dataset.pk).updated_at == dataset.updated_at

    _write_rows(tmp_path, [*ROWS, {"split": "dev", "question": "2 + 3?", "answer": "5"}])
    changed = _load(tmp_path)
    assert "dataset starter re-imported (3 examples)" in changed.detail
    reloaded = Dataset.objects.get(pk=dataset.pk)
    assert reloaded.example_count == 3 and reloaded.content_hash != dataset.content_hash


def test_without_data_files_nothing_but_the_signature_is_loaded(tmp_path):
    outcome = _load(tmp_path)
    assert outcome.detail == "version 1, production"
    assert not Dataset.objects.exists()


# The hash the starter rows import to: [split, inputs, outputs, accepted] per row.
STARTER_HASH = dataset_content_hash(
    [
        ("train", {"question": "What is 2 + 2?"}, {"answer": "4"}, {"answer": ["four"]}),
        ("dev", {"question": "What is the capital of Italy?"}, {"answer": "Rome"}, {}),
    ]
)


def test_a_compiled_file_for_the_starter_data_ships_an_optimized_production_version(tmp_path):
    _write_rows(tmp_path, ROWS)
    _write_compiled(tmp_path, _compiled(STARTER_HASH))
    outcome = _load(tmp_path)
    signature = Signature.objects.get(name="qa")
    plain, optimized = signature.versions.order_by("number")
    assert plain.compiled_state is None
    assert optimized.compiled_state["demos"] == [{"question": "What is 3 + 3?", "answer": "6"}]
    assert outcome.version == optimized and outcome.status == "created"
    assert outcome.detail == (
        "version 1, optimized version 2, production → v2; dataset starter imported (2 examples)"
    )
    assert Alias.objects.get(signature=signature, name="production").version == optimized
    for text in ("bootstrap_few_shot", STARTER_HASH, "exact_match", "0.400", "0.740"):
        assert text in optimized.changelog
    assert "python manage.py evaluations_optimize_library qa" in optimized.changelog
    scores = {
        score.signature_version.number: score
        for score in VersionScore.objects.select_related("signature_version", "dataset")
    }
    assert set(scores) == {1, 2}
    assert (scores[1].score, scores[2].score) == (0.4, 0.74)
    for score in scores.values():
        assert score.source == VersionScore.Source.LIBRARY
        assert score.dataset.name == "starter" and score.dataset_hash == STARTER_HASH
        assert (score.split, score.metric, score.model) == (
            "dev",
            "exact_match",
            "SmolLM2-135M-Instruct",
        )
        assert score.examples == 50
    assert (scores[2].ci_low, scores[2].ci_high) == (0.61, 0.85)

    again = _load(tmp_path)
    assert (again.status, again.detail, again.version) == (
        "unchanged",
        "matches version 1",
        optimized,
    )
    assert VersionScore.objects.count() == 2


def test_a_compiled_file_for_other_data_is_skipped(tmp_path):
    _write_rows(tmp_path, ROWS)
    _write_compiled(tmp_path, _compiled("0" * 64))
    outcome = _load(tmp_path)
    assert outcome.detail.endswith("; qa.compiled.json skipped: built from other starter data")
    assert Signature.objects.get().versions.count() == 1
    assert Alias.objects.get().version.number == 1
    assert not VersionScore.objects.exists()


def test_an_existing_installation_gets_the_optimized_version_without_alias_moves(tmp_path):
    _write_rows(tmp_path, ROWS)
    _load(tmp_path)
    _write_compiled(tmp_path, _compiled(STARTER_HASH))
    outcome = _load(tmp_path)
    assert outcome.status == "new_version"
    assert outcome.detail == "matches version 1, optimized version 2; aliases unchanged"
    assert Alias.objects.get().version.number == 1
    assert VersionScore.objects.filter(source="library").count() == 2


def test_a_malformed_compiled_file_is_refused_with_its_problems(tmp_path):
    _write_rows(tmp_path, ROWS)
    _write_compiled(tmp_path, {"optimizer": "x", "baseline": {"score": "high"}})
    with pytest.raises(ImportFileError) as exc:
        _load(tmp_path)
    assert "qa.compiled.json: `metric` is missing." in exc.value.problems
    assert "qa.compiled.json: `baseline` must hold a numeric `score` and `examples`." in (
        exc.value.problems
    )
    assert not Signature.objects.exists()  # all or nothing


# The shipped data --------------------------------------------------------------------------------


def test_every_shipped_starter_dataset_loads_against_its_template(monkeypatch):
    monkeypatch.setattr("registry.services.library.LIBRARY_DATA_DIR", LIBRARY_DATA_DIR)
    shipped = {path.name.removesuffix(".jsonl") for path in LIBRARY_DATA_DIR.glob("*.jsonl")}
    templates = {entry["name"] for entry in library.SIGNATURES}
    assert shipped <= templates
    out = io.StringIO()
    call_command("registry_load_library", stdout=out)
    for name in shipped:
        dataset = Dataset.objects.get(signature__name=name, name="starter")
        assert dataset.example_count > 0 and "train" in dataset.split_counts, name
        assert f"dataset starter imported ({dataset.example_count} examples)" in out.getvalue()
    for path in LIBRARY_DATA_DIR.glob("*.compiled.json"):
        name = path.name.removesuffix(".compiled.json")
        built = json.loads(path.read_text())
        production = Alias.objects.get(signature__name=name, name="production").version
        better = built["result"]["score"] > built["baseline"]["score"]
        assert bool(production.compiled_state) == better, f"{path.name}: built from other data?"
        assert production.scores.filter(source="library").exists()


def test_a_compiled_file_built_for_another_template_version_is_skipped(tmp_path):
    _write_rows(tmp_path, ROWS)
    _write_compiled(tmp_path, _compiled(STARTER_HASH, template_hash="0" * 64))
    outcome = _load(tmp_path)
    assert "skipped: built for another version of the template" in outcome.detail
    assert Signature.objects.get(name="qa").versions.count() == 1


def test_a_compiled_version_no_better_than_the_template_is_not_shipped(tmp_path):
    _write_rows(tmp_path, ROWS)
    same = {"score": 0.4, "examples": 50, "ci_low": 0.27, "ci_high": 0.54}
    _write_compiled(tmp_path, _compiled(STARTER_HASH, result=same))
    outcome = _load(tmp_path)
    assert "compiled version not shipped: dev exact_match 0.400" in outcome.detail
    (plain,) = Signature.objects.get(name="qa").versions.all()
    assert Alias.objects.get(name="production").version == plain
    assert plain.scores.get().score == 0.4
