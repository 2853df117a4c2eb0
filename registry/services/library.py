"""Loading the template library (``registry.library`` holds its entries) into the registry.

Beside each template, ``registry/library_data`` may hold its starter dataset
(``<name>.jsonl``, loaded as the dataset ``starter``) and the optimized version shipped with
it (``<name>.compiled.json``: the compiled state an optimizer run built from that dataset,
with the dev scores measured before and after).

LoadOutcome, what loading one entry did, is also what discovery reports.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from registry import library
from registry.exceptions import ImportFileError
from registry.models import Dataset, Signature, SignatureVersion, VersionScore
from registry.services._common import MaybeUser
from registry.services.aliases import alias_set
from registry.services.datasets import dataset_content_hash, dataset_examples_parse, dataset_import
from registry.services.scores import version_score_record
from registry.services.signatures import signature_create
from registry.services.versions import signature_version_create
from registry.specs import PRODUCTION, version_spec_validate

LIBRARY_DATA_DIR = Path(__file__).resolve().parent.parent / "library_data"
STARTER_DATASET = "starter"
# What a `<name>.compiled.json` must hold (the build command writes more, e.g. `params`).
COMPILED_KEYS = (
    "optimizer",
    "metric",
    "dataset_hash",
    "template_hash",
    "dev_split",
    "model",
    "baseline",
    "result",
    "compiled_state",
    "command",
)
SCORE_KEYS = ("score", "examples")


@dataclass(frozen=True)
class LoadOutcome:
    """What loading one library or discovered signature did."""

    name: str
    status: str  # created | new_version | unchanged | skipped
    detail: str = ""
    version: SignatureVersion | None = None


@transaction.atomic
def library_load(
    *,
    entries: list[dict] | None = None,
    user: MaybeUser = None,
    data_dir: Path | None = None,
) -> list[LoadOutcome]:
    """Load the template library idempotently.

    A missing signature is created with version 1, and its `production` alias points there.
    A library entry whose spec matches any existing version is left alone, so operators'
    own later versions stay latest. A changed entry (a newer toolkit) becomes a new version;
    aliases are never moved for an existing signature.

    With a starter dataset in `data_dir` (default `registry/library_data`), the signature
    gets (or, when the file changed, re-imports) its dataset `starter`; with a compiled file
    built from exactly that dataset, the compiled version follows the plain one, `production`
    points at it for a new signature, and both carry the dev scores measured when it was
    built (`VersionScore`, source `library`).
    """
    directory = data_dir if data_dir is not None else LIBRARY_DATA_DIR
    outcomes = []
    for entry in entries if entries is not None else library.SIGNATURES:
        spec = version_spec_validate(entry["spec"])
        signature = Signature.objects.filter(name=entry["name"]).first()
        created = signature is None
        if created:
            signature = signature_create(
                name=entry["name"],
                description=entry["description"],
                tags=entry["tags"],
                author=user,
            )
            version = signature_version_create(
                signature=signature, spec=spec, changelog="From the template library.", author=user
            ).version
            status, versions = "created", [f"version {version.number}"]
        else:
            version = signature.versions.filter(content_hash=spec.content_hash).first()
            if version is not None:
                status, versions = "unchanged", [f"matches version {version.number}"]
            else:
                version = signature_version_create(
                    signature=signature,
                    spec=spec,
                    changelog="Updated template from the library.",
                    author=user,
                ).version
                status, versions = "new_version", [f"version {version.number}"]
        runs = version
        dataset, data_notes = _starter_load(
            signature=signature,
            version=version,
            path=directory / f"{entry['name']}.jsonl",
            user=user,
        )
        compiled_path = directory / f"{entry['name']}.compiled.json"
        if dataset is not None and compiled_path.exists():
            compiled, compiled_new, skipped = _compiled_load(
                signature=signature,
                plain=version,
                spec=entry["spec"],
                dataset=dataset,
                path=compiled_path,
                user=user,
            )
            runs = compiled or version
            if compiled_new:
                versions.append(f"optimized version {runs.number}")
                status = "new_version" if status == "unchanged" else status
            data_notes += skipped
        if created:
            alias_set(signature=signature, name=PRODUCTION, version=runs, user=user)
            production = "production" if runs == version else f"production → v{runs.number}"
            detail = ", ".join([*versions, production])
        elif status == "new_version":
            detail = ", ".join(versions) + "; aliases unchanged"
        else:
            detail = versions[0]
        detail = "; ".join([detail, *data_notes])
        outcomes.append(LoadOutcome(entry["name"], status, detail, runs))
    return outcomes


def _starter_load(
    *, signature: Signature, version: SignatureVersion, path: Path, user: MaybeUser
) -> tuple[Dataset | None, list[str]]:
    """The signature's starter dataset, imported from `path` when it is new or changed, and
    what was done (nothing to say when it was unchanged)."""
    if not path.exists():
        return None, []
    content = path.read_bytes()
    current = Dataset.objects.filter(signature=signature, name=STARTER_DATASET).first()
    if current is not None:
        examples = dataset_examples_parse(version=version, content=content)
        if dataset_content_hash(examples) == current.content_hash:
            return current, []
    dataset = dataset_import(
        signature=signature,
        name=STARTER_DATASET,
        content=content,
        replace=True,
        description=f"The template library's starter dataset for {signature.name}.",
        source=f"library: {path.name}",
        user=user,
        version=version,
    )
    verb = "re-imported" if current is not None else "imported"
    return dataset, [f"dataset {STARTER_DATASET} {verb} ({dataset.example_count} examples)"]


def _compiled_read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImportFileError([f"{path.name}: cannot be read as JSON ({exc})."]) from exc
    if not isinstance(document, dict):
        raise ImportFileError([f"{path.name}: must be a JSON object."])
    problems = [f"{path.name}: `{key}` is missing." for key in COMPILED_KEYS if key not in document]
    for key in ("baseline", "result"):
        score = document.get(key)
        if key in document and not (
            isinstance(score, dict)
            and all(isinstance(score.get(k), int | float) for k in SCORE_KEYS)
        ):
            problems.append(f"{path.name}: `{key}` must hold a numeric `score` and `examples`.")
    if problems:
        raise ImportFileError(problems)
    return document


def _compiled_load(
    *,
    signature: Signature,
    plain: SignatureVersion,
    spec: dict[str, Any],
    dataset: Dataset,
    path: Path,
    user: MaybeUser,
) -> tuple[SignatureVersion | None, bool, list[str]]:
    """The shipped optimized version, whether it was created now, and a note when the file
    was skipped: built from other data than the starter dataset now holds."""
    compiled = _compiled_read(path)
    if compiled["dataset_hash"] != dataset.content_hash:
        return None, False, [f"{path.name} skipped: built from other starter data"]
    if compiled["template_hash"] != plain.content_hash:
        # Demos and instructions compiled for an earlier template would land on this one.
        return None, False, [f"{path.name} skipped: built for another version of the template"]
    baseline, result = compiled["baseline"], compiled["result"]
    if result["score"] <= baseline["score"]:
        # Shipped like any promotion: only a version that scores better than the plain one.
        _library_score(
            version=plain, dataset=dataset, compiled=compiled, measured=baseline, path=path
        )
        return (
            None,
            False,
            [
                f"compiled version not shipped: dev {compiled['metric']} {result['score']:.3f}, "
                f"no better than the template's {baseline['score']:.3f}"
            ],
        )
    changelog = (
        f"Optimized by the template library: {compiled['optimizer']} on dataset "
        f"{STARTER_DATASET} (sha256 {compiled['dataset_hash']}), metric {compiled['metric']}: "
        f"dev score {baseline['score']:.3f} before, {result['score']:.3f} after, on "
        f"{result['examples']} `{compiled['dev_split']}` examples with {compiled['model']}. "
        f"Rebuild: {compiled['command']}"
    )
    optimized_spec = version_spec_validate(spec | {"compiled_state": compiled["compiled_state"]})
    optimized = signature.versions.filter(content_hash=optimized_spec.content_hash).first()
    created = optimized is None
    if created:
        optimized = signature_version_create(
            signature=signature, spec=optimized_spec, changelog=changelog, author=user
        ).version
    for version, measured in ((plain, baseline), (optimized, result)):
        _library_score(
            version=version, dataset=dataset, compiled=compiled, measured=measured, path=path
        )
    return optimized, created, []


def _library_score(
    *,
    version: SignatureVersion,
    dataset: Dataset,
    compiled: dict[str, Any],
    measured: dict[str, Any],
    path: Path,
) -> None:
    """Record a score measured at build time, once per version, data and metric."""
    already = VersionScore.objects.filter(
        signature_version=version,
        source=VersionScore.Source.LIBRARY,
        dataset_hash=dataset.content_hash,
        split=compiled["dev_split"],
        metric=compiled["metric"],
    ).exists()
    if already:
        return
    version_score_record(
        version=version,
        dataset=dataset,
        dataset_hash=dataset.content_hash,
        split=compiled["dev_split"],
        metric=compiled["metric"],
        score=measured["score"],
        examples=measured["examples"],
        ci_low=measured.get("ci_low"),
        ci_high=measured.get("ci_high"),
        model=compiled["model"],
        source=VersionScore.Source.LIBRARY,
        reference=f"library: {path.name}, built {compiled.get('built_at', 'at release')}"[:200],
    )
