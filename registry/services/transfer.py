"""Importing a registry export document (the format ``selectors`` exports): all or nothing.

The whole file is validated against itself and the registry before anything is written, so
a bad file changes nothing and reports every problem at once.
"""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.dateparse import parse_datetime

from registry.exceptions import ImportFileError, InvalidSpec, errors_flatten
from registry.models import Signature, SignatureVersion
from registry.selectors import EXPORT_FORMAT, EXPORT_FORMAT_VERSION
from registry.services._common import MaybeUser
from registry.services.aliases import alias_set
from registry.services.signatures import signature_create, signature_update
from registry.services.versions import signature_version_create, version_spec_check
from registry.specs import (
    VersionSpec,
    alias_name_problem,
    name_problem,
    tags_normalize,
    text_problem,
)


@dataclass(frozen=True)
class ImportOutcome:
    name: str
    created_signature: bool
    created_versions: list[int]
    moved_aliases: list[str]
    notes: list[str]


@dataclass(frozen=True)
class _ImportPlan:
    name: str
    description: str
    tags: list[str]
    versions: list[tuple[int, VersionSpec, dict[str, Any]]]
    aliases: dict[str, int]


def _import_plan(document: Any) -> list[_ImportPlan]:
    """Validate a whole export document against itself and the registry; write nothing."""
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise ImportFileError([f"Not a registry export: `format` must be `{EXPORT_FORMAT}`."])
    if document.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ImportFileError(
            [
                f"Unsupported format_version {document.get('format_version')!r}; "
                f"this toolkit reads version {EXPORT_FORMAT_VERSION}."
            ]
        )
    entries = document.get("signatures")
    if not isinstance(entries, list):
        raise ImportFileError(["`signatures` must be a list."])
    problems: list[str] = []
    plans: list[_ImportPlan] = []
    seen_names: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"signatures[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object.")
            continue
        name = entry.get("name")
        problem = name_problem(name)
        if problem:
            problems.append(f"{where}.name: {problem}")
            continue
        where = f"signature '{name}'"
        if name in seen_names:
            problems.append(f"{where}: appears twice in the file.")
            continue
        seen_names.add(name)
        entry_problems: list[str] = []
        try:
            tags = tags_normalize(entry.get("tags") or [])
        except InvalidSpec as exc:
            entry_problems += [f"{where}.{line}" for line in errors_flatten(exc.errors)]
            tags = []
        description = entry.get("description") or ""
        problem = text_problem(description)
        if problem:
            entry_problems.append(f"{where}.description: {problem}")
        versions = _import_versions(name, entry.get("versions"), entry_problems)
        aliases = entry.get("aliases") or {}
        numbers = {number for number, _, _ in versions}
        if not isinstance(aliases, dict):
            entry_problems.append(f"{where}.aliases: must map alias names to version numbers.")
            aliases = {}
        for alias_name, number in aliases.items():
            problem = alias_name_problem(alias_name)
            if problem:
                entry_problems.append(f"{where}.aliases.{alias_name}: {problem}")
            elif not isinstance(number, int) or isinstance(number, bool) or number not in numbers:
                entry_problems.append(
                    f"{where}.aliases.{alias_name}: points at version {number!r}, "
                    "which is not in the file."
                )
        if not entry_problems:
            entry_problems += _import_conflicts(name, versions)
        problems += entry_problems
        plans.append(_ImportPlan(name, description, tags, versions, aliases))
    if problems:
        raise ImportFileError(problems)
    return plans


def _import_versions(
    name: str, raw: Any, problems: list[str]
) -> list[tuple[int, VersionSpec, dict[str, Any]]]:
    where = f"signature '{name}'"
    if not isinstance(raw, list):
        problems.append(f"{where}.versions: must be a list.")
        return []
    versions = []
    previous_hash = None
    for position, item in enumerate(raw, start=1):
        here = f"{where} version {position}"
        if not isinstance(item, dict):
            problems.append(f"{here}: must be an object.")
            continue
        if item.get("number") != position:
            problems.append(
                f"{here}: versions must be numbered 1, 2, 3 ... in order; found "
                f"{item.get('number')!r}."
            )
            continue
        try:
            spec = version_spec_check(name=name, data=item)
        except InvalidSpec as exc:
            problems += [f"{here}: {line}" for line in errors_flatten(exc.errors)]
            continue
        if item.get("content_hash") not in (None, spec.content_hash):
            problems.append(
                f"{here}: content_hash does not match its content (edited or corrupted file)."
            )
            continue
        if spec.content_hash == previous_hash:
            problems.append(f"{here}: identical to version {position - 1}.")
        previous_hash = spec.content_hash
        metadata = {
            "changelog": item.get("changelog") or "",
            "author": item.get("author"),
            "created_at": item.get("created_at"),
        }
        if metadata["created_at"] is not None:
            try:
                created_at = parse_datetime(str(metadata["created_at"]))
            except ValueError:  # well-formed but impossible, e.g. February 30
                created_at = None
            if created_at is None or created_at.tzinfo is None:
                problems.append(f"{here}: created_at must be an ISO 8601 time with a zone.")
            metadata["created_at"] = created_at
        problem = text_problem(metadata["changelog"])
        if problem:
            problems.append(f"{here}: changelog {problem}")
        if metadata["author"] is not None and text_problem(metadata["author"]):
            problems.append(f"{here}: author must be a username or null.")
        versions.append((position, spec, metadata))
    return versions


def _import_conflicts(
    name: str, versions: list[tuple[int, VersionSpec, dict[str, Any]]]
) -> list[str]:
    """Versions the registry already has under the same number must be the same versions."""
    existing = dict(
        SignatureVersion.objects.filter(signature__name=name).values_list("number", "content_hash")
    )
    return [
        f"signature '{name}' version {number}: differs from the registry's version {number} "
        "(saved versions never change; import it under another signature name)."
        for number, spec, _ in versions
        if number in existing and existing[number] != spec.content_hash
    ]


def registry_import(*, document: Any, user: MaybeUser = None) -> list[ImportOutcome]:
    """Import an export document: all of it or nothing.

    Everything is validated first (shapes, field specs, hashes, numbering, conflicts with the
    registry); then, in one transaction, missing signatures and versions are created with their
    original numbers, times, changelogs and (when the user exists here) authors, and the
    file's aliases are set. Versions the registry has already are left as they are.
    """
    plans = _import_plan(document)
    usernames = {meta["author"] for plan in plans for _, _, meta in plan.versions} - {None}
    user_model = get_user_model()
    authors = {
        found.get_username(): found
        for found in user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": usernames})
    }
    outcomes = []
    with transaction.atomic():
        for plan in plans:
            outcomes.append(_import_one(plan, authors=authors, user=user))
    return outcomes


def _import_one(plan: _ImportPlan, *, authors: dict[str, Any], user: MaybeUser) -> ImportOutcome:
    notes: list[str] = []
    signature = Signature.objects.filter(name=plan.name).first()
    created_signature = signature is None
    if signature is None:
        signature = signature_create(
            name=plan.name, description=plan.description, tags=plan.tags, author=user
        )
    elif (signature.description, signature.tags) != (plan.description.strip(), plan.tags):
        signature_update(signature=signature, description=plan.description, tags=plan.tags)
        notes.append("description and tags updated")
    existing = set(signature.versions.values_list("number", flat=True))
    created_versions = []
    for number, spec, meta in plan.versions:
        if number in existing:
            continue
        author = authors.get(meta["author"])
        if meta["author"] and author is None:
            notes.append(f"version {number}: author '{meta['author']}' is not a user here")
        result = signature_version_create(
            signature=signature,
            spec=spec,
            changelog=meta["changelog"],
            author=author,
            created_at=meta["created_at"],
        )
        if not result.created or result.version.number != number:
            # The registry changed between validation and this write.
            raise ImportFileError(
                [f"signature '{plan.name}' version {number}: the registry changed during import."]
            )
        created_versions.append(number)
    moved_aliases = []
    for alias_name, number in sorted(plan.aliases.items()):
        version = signature.versions.get(number=number)
        if alias_set(signature=signature, name=alias_name, version=version, user=user).changed:
            moved_aliases.append(alias_name)
    return ImportOutcome(plan.name, created_signature, created_versions, moved_aliases, notes)
