"""The registry's management commands: library, discovery, export/import, aliases."""

import io
import json
import sys
import textwrap

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from registry.library import SIGNATURES
from registry.models import Alias, AliasChange, Signature, SignatureVersion
from registry.selectors import registry_export, signature_version_resolve
from registry.services.aliases import alias_set
from registry.services.versions import signature_version_create

pytestmark = pytest.mark.django_db


def _call(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


# Library


def test_load_library_creates_then_changes_nothing():
    first = _call("registry_load_library")
    for entry in SIGNATURES:
        assert f"created     {entry['name']} (version 1, production)" in first
    assert Signature.objects.count() == len(SIGNATURES)
    assert signature_version_resolve(name="qa").number == 1
    assert Alias.objects.filter(name="production").count() == len(SIGNATURES)

    second = _call("registry_load_library")
    for entry in SIGNATURES:
        assert f"unchanged   {entry['name']} (matches version 1)" in second
    assert SignatureVersion.objects.count() == len(SIGNATURES)
    assert f"{len(SIGNATURES)} unchanged" in second


def test_load_library_keeps_operator_versions_and_aliases(qa_spec):
    _call("registry_load_library")
    qa = Signature.objects.get(name="qa")
    mine = signature_version_create(signature=qa, spec=qa_spec).version
    alias_set(signature=qa, name="production", version=mine)
    assert "unchanged   qa (matches version 1)" in _call("registry_load_library")
    assert signature_version_resolve(name="qa") == mine


def test_changed_library_entry_becomes_a_new_version_without_moving_aliases(monkeypatch):
    _call("registry_load_library")
    changed = [
        entry | {"spec": entry["spec"] | {"instructions": "Answer in French."}}
        if entry["name"] == "qa"
        else entry
        for entry in SIGNATURES
    ]
    monkeypatch.setattr("registry.library.SIGNATURES", changed)
    output = _call("registry_load_library")
    assert "new_version qa (version 2; aliases unchanged)" in output
    assert signature_version_resolve(name="qa").number == 1
    assert signature_version_resolve(name="qa", ref="latest").instructions == "Answer in French."


# Discovery


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a Python module in the test, import it by its dotted path."""
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        (package / "sigs.py").write_text(textwrap.dedent(source))
        for name in [name for name in sys.modules if name.startswith("userpkg")]:
            del sys.modules[name]
        return "userpkg.sigs"

    return write


MODULE_V1 = '''
    from typing import Literal

    import dspy
    from dspy import InputField, OutputField


    class GenerateAnswer(dspy.Signature):
        """Answer questions with short factoid answers."""

        question: str = InputField(desc="The question.")
        answer: str = OutputField(desc="Often between 1 and 5 words.")


    class RateTicket(dspy.Signature):
        """Rate the urgency of a support ticket."""

        ticket: str = InputField()
        hints: list[str] = InputField(desc="Known facts.")
        urgency: Literal["low", "high"] = OutputField()
        score: float = OutputField()


    class NeedsArgs(dspy.Module):
        def __init__(self, depth):
            super().__init__()
            self.step = dspy.Predict("question -> answer")


    class Pipeline(dspy.Module):
        def __init__(self):
            super().__init__()
            self.think = dspy.ChainOfThought(GenerateAnswer)

        def forward(self, question):
            return self.think(question=question)


    class TwoSteps(dspy.Module):
        def __init__(self):
            super().__init__()
            self.first = dspy.Predict("question -> draft")
            self.second = dspy.Predict("draft -> answer")


    class Unsupported(dspy.Signature):
        """Numbers in, numbers out."""

        values: list[int] = InputField()
        total: int = OutputField()


    class Reserved(dspy.Signature):
        """Uses a name DSPy keeps for itself."""

        question: str = InputField()
        reasoning: str = OutputField()


    summarizer = dspy.ChainOfThought("document -> summary")
    summarizer.predict.demos = [
        dspy.Example(document="Long text.", reasoning="r", summary="Short.")
    ]
    alias_of_summarizer = summarizer
'''


def test_discover_registers_signatures_and_modules(user_module):
    module = user_module(MODULE_V1)
    output = _call("registry_discover", module)

    assert "created     generate_answer: version 1 from userpkg.sigs.GenerateAnswer" in output
    assert "created     rate_ticket:" in output
    assert "created     pipeline:" in output
    assert "created     summarizer:" in output
    assert "skipped     NeedsArgs: its constructor needs arguments (depth)" in output
    assert "skipped     TwoSteps: it holds 2 Predict/ChainOfThought modules" in output
    assert "skipped     Unsupported: field `values`: type `list[int]` is outside" in output
    assert "skipped     reserved: output_fields[0].name: `reasoning` is reserved by DSPy." in output
    assert "alias_of_summarizer" not in output  # the same object, registered once

    answer = signature_version_resolve(name="generate_answer")
    assert answer.module_kind == "Predict"
    assert answer.instructions == "Answer questions with short factoid answers."
    assert answer.input_fields == [
        {"name": "question", "type": "str", "description": "The question.", "prefix": None}
    ]
    ticket = signature_version_resolve(name="rate_ticket")
    assert [(f["name"], f["type"]) for f in ticket.fields] == [
        ("ticket", "str"),
        ("hints", "list[str]"),
        ("urgency", "literal"),
        ("score", "float"),
    ]
    assert ticket.output_fields[0]["choices"] == ["low", "high"]
    pipeline = signature_version_resolve(name="pipeline")
    assert pipeline.module_kind == "ChainOfThought"
    assert [f["name"] for f in pipeline.output_fields] == ["answer"]
    summarizer = signature_version_resolve(name="summarizer")
    assert summarizer.compiled_state["predict"]["demos"][0]["summary"] == "Short."


def test_discover_again_skips_unchanged_and_versions_changed(user_module):
    module = user_module(MODULE_V1)
    _call("registry_discover", module)
    user_module(MODULE_V1.replace("Often between 1 and 5 words.", "One word."))
    output = _call("registry_discover", module)
    assert "new_version generate_answer: version 2" in output
    assert "unchanged   rate_ticket: same as latest version 1" in output
    assert "unchanged   summarizer: same as latest version 1" in output
    assert signature_version_resolve(name="generate_answer").output_fields[0]["description"] == (
        "One word."
    )
    assert SignatureVersion.objects.filter(signature__name="rate_ticket").count() == 1


def test_discover_dry_run_and_prefix(user_module):
    module = user_module(MODULE_V1)
    output = _call("registry_discover", module, "--prefix", "shop_", "--dry-run")
    assert "created     shop_generate_answer" in output
    assert "Dry run: nothing was written." in output
    assert not Signature.objects.exists()


def test_discover_bad_module():
    with pytest.raises(CommandError, match="Cannot import no_such_module_here"):
        _call("registry_discover", "no_such_module_here")


# Export and import


@pytest.fixture
def populated(make_user, qa_spec):
    _call("registry_load_library")
    author = make_user("alice")
    qa = Signature.objects.get(name="qa")
    second = signature_version_create(
        signature=qa,
        spec=qa_spec | {"lm_defaults": {"temperature": 0.7}},
        changelog="Warmer.",
        author=author,
    ).version
    alias_set(signature=qa, name="staging", version=second)
    return qa


def _wipe_registry() -> None:
    # Saved versions refuse deletion through the ORM by design; a test may start over in SQL.
    with connection.cursor() as cursor:
        for table in ("aliaschange", "alias", "signatureversion", "signature"):
            cursor.execute(f"DELETE FROM registry_{table}")  # noqa: S608 (fixed names)


def test_export_import_round_trip_is_lossless(populated, tmp_path):
    path = tmp_path / "registry.json"
    count = len(SIGNATURES)
    assert f"Exported {count} signatures ({count + 1} versions)" in _call(
        "registry_export", "--output", str(path)
    )
    before = json.loads(path.read_text())
    _wipe_registry()
    assert not Signature.objects.exists()

    output = _call("registry_import", str(path))
    assert "qa: created; added versions 1, 2; set aliases production, staging" in output
    after = registry_export()
    assert after == before
    qa2 = signature_version_resolve(name="qa", ref="staging")
    assert (qa2.author.username, qa2.changelog) == ("alice", "Warmer.")

    again = _call("registry_import", str(path))
    assert "qa: unchanged" in again
    assert registry_export() == before


def test_export_named_signatures_to_stdout(populated):
    document = json.loads(_call("registry_export", "qa", "sentiment"))
    assert [entry["name"] for entry in document["signatures"]] == ["qa", "sentiment"]
    assert document["signatures"][0]["aliases"] == {"production": 1, "staging": 2}
    with pytest.raises(CommandError, match="nope"):
        _call("registry_export", "nope")


def test_import_appends_new_versions_to_existing_signatures(populated, tmp_path):
    path = tmp_path / "registry.json"
    _call("registry_export", "qa", "--output", str(path))
    document = json.loads(path.read_text())
    # Simulate the file coming from a registry that is one version ahead.
    qa = document["signatures"][0]
    third = dict(qa["versions"][1]) | {"number": 3, "instructions": "Third.", "content_hash": None}
    qa["versions"].append(third)
    qa["aliases"]["production"] = 3
    path.write_text(json.dumps(document))
    output = _call("registry_import", str(path))
    assert "qa: added versions 3; set aliases production" in output
    assert signature_version_resolve(name="qa").number == 3


def _import_error(document, tmp_path) -> str:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(CommandError) as caught:
        _call("registry_import", str(path))
    return str(caught.value)


def test_import_is_all_or_nothing(populated, tmp_path):
    document = registry_export()
    _wipe_registry()
    # One bad version among many: nothing at all may be written.
    document["signatures"][-1]["versions"][0]["output_fields"][0]["type"] = "tuple"
    message = _import_error(document, tmp_path)
    assert "Nothing was imported" in message
    assert "Unknown type `tuple`" in message
    assert not Signature.objects.exists()
    assert not AliasChange.objects.exists()


def test_import_reports_every_kind_of_problem(populated, tmp_path):
    document = registry_export(names=["qa", "sentiment"])
    qa, sentiment = document["signatures"]
    qa["versions"][0]["instructions"] = "Tampered."  # hash no longer matches
    sentiment["aliases"]["production"] = 9
    document["signatures"].append(dict(sentiment))  # duplicate name
    message = _import_error(document, tmp_path)
    assert "signature 'qa' version 1: content_hash does not match" in message
    assert "aliases.production: points at version 9" in message
    assert "signature 'sentiment': appears twice" in message


def test_import_reports_malformed_values_instead_of_crashing(populated, tmp_path):
    document = registry_export(names=["qa"])
    qa = document["signatures"][0]
    qa["versions"][0]["created_at"] = "2024-02-30T00:00:00+00:00"
    qa["versions"][1]["author"] = ["alice"]
    qa["aliases"]["production"] = [1]
    message = _import_error(document, tmp_path)
    assert "signature 'qa' version 1: created_at must be an ISO 8601 time" in message
    assert "signature 'qa' version 2: author must be a username or null" in message
    assert "aliases.production: points at version [1]" in message


def test_import_refuses_a_different_version_under_an_existing_number(populated, tmp_path):
    document = registry_export(names=["qa"])
    version = document["signatures"][0]["versions"][1]
    version["instructions"] = "Not what the registry has."
    version["content_hash"] = None
    message = _import_error(document, tmp_path)
    assert "differs from the registry's version 2" in message
    assert signature_version_resolve(name="qa", ref="2").instructions != version["instructions"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not json", "is not valid JSON"),
        ('{"format": "other"}', "Not a registry export"),
        ('{"format": "dspy-toolkit-registry", "format_version": 99}', "Unsupported format_version"),
    ],
)
def test_import_unreadable_files(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=fragment):
        _call("registry_import", str(path))


# Aliases


def test_alias_command(populated):
    assert "Moved qa@production from version 1 to version 2." in _call(
        "registry_alias", "qa", "production", "2"
    )
    assert "already points at version 2" in _call("registry_alias", "qa", "production", "2")
    assert "Removed qa@staging." in _call("registry_alias", "qa", "staging", "--remove")
    with pytest.raises(CommandError, match="has no version 7"):
        _call("registry_alias", "qa", "production", "7")
    with pytest.raises(CommandError, match="implicit"):
        _call("registry_alias", "qa", "latest", "1")
    with pytest.raises(CommandError, match="either a version number or --remove"):
        _call("registry_alias", "qa", "production")
