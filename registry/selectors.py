"""Reads of the registry. Writes live in services."""

import difflib
import json
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Prefetch, Q, QuerySet

from registry.exceptions import (
    AliasNotFound,
    DatasetNotFound,
    SignatureNotFound,
    VersionNotFound,
)
from registry.models import Alias, Dataset, DatasetExample, Signature, SignatureVersion
from registry.specs import LATEST, PRODUCTION, alias_name_problem, name_problem


def signature_get(*, name: str) -> Signature:
    return _signature_named(Signature.objects.all(), name=name)


def signature_detail(*, name: str) -> Signature:
    """A signature with its versions (newest first) and aliases, authors and editors joined."""
    queryset = Signature.objects.prefetch_related(
        Prefetch(
            "versions",
            queryset=SignatureVersion.objects.select_related("author").order_by("-number"),
        ),
        Prefetch("aliases", queryset=Alias.objects.select_related("version", "updated_by")),
    )
    return _signature_named(queryset, name=name)


def _signature_named(queryset: QuerySet[Signature], *, name: str) -> Signature:
    # A name that breaks the naming rules is never stored, and one holding a NUL character
    # would make PostgreSQL refuse the query: either way there is no such signature.
    if name_problem(name) is None:
        try:
            return queryset.get(name=name)
        except Signature.DoesNotExist:
            pass
    raise SignatureNotFound(f"No signature named '{name}'.")


def alias_get(*, signature: Signature, name: str) -> Alias:
    alias = _alias_find(signature=signature, name=name)
    if alias is None:
        raise AliasNotFound(f"Signature '{signature.name}' has no alias '{name}'.")
    return alias


def _alias_find(*, signature: Signature, name: str) -> Alias | None:
    if alias_name_problem(name) is not None:  # never stored; see _signature_named
        return None
    return (
        Alias.objects.select_related("version__signature", "updated_by")
        .filter(signature=signature, name=name)
        .first()
    )


def signature_version_latest(*, signature: Signature) -> SignatureVersion | None:
    return (
        SignatureVersion.objects.filter(signature=signature)
        .select_related("signature")
        .order_by("-number")
        .first()
    )


def signature_version_get(*, signature: Signature, number: int) -> SignatureVersion:
    try:
        return SignatureVersion.objects.select_related("signature").get(
            signature=signature, number=number
        )
    except SignatureVersion.DoesNotExist:
        raise VersionNotFound(f"Signature '{signature.name}' has no version {number}.") from None


def signature_version_resolve(*, name: str, ref: int | str | None = None) -> SignatureVersion:
    """The version that ``name`` at ``ref`` designates.

    ``ref`` is a version number (an int or a string of digits), an alias name (``latest`` is
    implicit: the newest version), or None: the ``production`` alias when set, else the newest
    version.
    """
    signature = signature_get(name=name)
    if isinstance(ref, bool):
        raise VersionNotFound(f"'{ref}' is not a version number or alias of '{name}'.")
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
        return signature_version_get(signature=signature, number=int(ref))
    if ref is None:
        production = _alias_find(signature=signature, name=PRODUCTION)
        if production is not None:
            return production.version
        ref = LATEST
    if ref == LATEST:
        latest = signature_version_latest(signature=signature)
        if latest is None:
            raise VersionNotFound(f"Signature '{name}' has no versions yet.")
        return latest
    return alias_get(signature=signature, name=ref).version


def signature_list(
    *,
    search: str | None = None,
    tag: str | None = None,
    module_kind: str | None = None,
    alias: str | None = None,
) -> QuerySet[Signature]:
    """Signatures with their aliases, newest version first in ``versions``.

    ``search`` matches the name, the description or a tag; ``module_kind`` matches signatures
    with a version of that kind; ``alias`` those that have an alias of that name.
    """
    queryset = Signature.objects.all()
    if search:
        queryset = queryset.filter(
            Q(name__icontains=search) | Q(description__icontains=search) | Q(tags__icontains=search)
        )
    if tag:
        queryset = queryset.filter(_tag_condition(tag))
    if module_kind:
        queryset = queryset.filter(versions__module_kind=module_kind)
    if alias:
        queryset = queryset.filter(aliases__name=alias)
    return (
        queryset.distinct()
        .order_by("name")
        .prefetch_related(
            Prefetch("versions", queryset=SignatureVersion.objects.order_by("-number")),
            Prefetch("aliases", queryset=Alias.objects.select_related("version")),
        )
    )


def _tag_condition(tag: str) -> Q:
    # JSON containment is exact and indexable on PostgreSQL; SQLite lacks it, and there the
    # quoted tag inside the JSON text is the same test (tags are normalised strings).
    if connection.features.supports_json_field_contains:
        return Q(tags__contains=[tag])
    return Q(tags__icontains=json.dumps(tag))


def dataset_list(*, signature: Signature) -> QuerySet[Dataset]:
    """A signature's datasets by name, their importers joined."""
    return Dataset.objects.filter(signature=signature).select_related("signature", "created_by")


def dataset_get(*, signature: Signature, name: str) -> Dataset:
    # A name outside the naming rules is never stored (see _signature_named).
    if name_problem(name) is None:
        found = dataset_list(signature=signature).filter(name=name).first()
        if found is not None:
            return found
    raise DatasetNotFound(f"Signature '{signature.name}' has no dataset '{name}'.")


def dataset_examples(*, dataset: Dataset, split: str | None = None) -> QuerySet[DatasetExample]:
    """A dataset's examples (of one split, when given) in file order."""
    queryset = DatasetExample.objects.filter(dataset=dataset)
    if split:
        queryset = queryset.filter(split=split)
    return queryset.order_by("position")


EXPORT_FORMAT = "dspy-toolkit-registry"
EXPORT_FORMAT_VERSION = 1


def version_export(version: SignatureVersion) -> dict:
    return {
        "number": version.number,
        **version.behaviour(),
        "content_hash": version.content_hash,
        "changelog": version.changelog,
        "author": version.author.get_username() if version.author else None,
        "created_at": version.created_at.isoformat(),
    }


def registry_export(*, names: list[str] | None = None) -> dict:
    """The registry (or the named signatures) as one JSON document, for registry_import.

    Holds every version with its number, behaviour, hash, changelog, author and creation time,
    and every alias, so an import into an empty registry reproduces it exactly.
    """
    queryset = Signature.objects.order_by("name").prefetch_related(
        Prefetch(
            "versions",
            queryset=SignatureVersion.objects.select_related("author").order_by("number"),
        ),
        Prefetch("aliases", queryset=Alias.objects.select_related("version").order_by("name")),
    )
    if names:
        found = set(queryset.filter(name__in=names).values_list("name", flat=True))
        missing = sorted(set(names) - found)
        if missing:
            raise SignatureNotFound(f"No signature named {', '.join(map(repr, missing))}.")
        queryset = queryset.filter(name__in=names)
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "signatures": [
            {
                "name": signature.name,
                "description": signature.description,
                "tags": signature.tags,
                "versions": [version_export(version) for version in signature.versions.all()],
                "aliases": {alias.name: alias.version.number for alias in signature.aliases.all()},
            }
            for signature in queryset
        ],
    }


@dataclass(frozen=True)
class FieldChange:
    name: str
    role: str  # input | output
    status: str  # added | removed | changed | unchanged
    old: dict | None
    new: dict | None
    changed_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class VersionDiff:
    old: SignatureVersion
    new: SignatureVersion
    instructions: list[tuple[str, str]]  # (kind, line): kind is "+", "-" or " "
    fields: list[FieldChange]
    changes: dict[str, tuple[Any, Any]]  # other behaviour that differs: key -> (old, new)

    @property
    def identical(self) -> bool:
        return self.old.content_hash == self.new.content_hash


def _field_rows(version: SignatureVersion) -> dict[str, tuple[str, dict]]:
    rows = {field["name"]: ("input", field) for field in version.input_fields}
    rows |= {field["name"]: ("output", field) for field in version.output_fields}
    return rows


def signature_version_diff(*, old: SignatureVersion, new: SignatureVersion) -> VersionDiff:
    """What changed from ``old`` to ``new``: instructions line by line, fields, the rest."""
    instructions = [
        (line[0], line[2:])
        for line in difflib.ndiff(old.instructions.splitlines(), new.instructions.splitlines())
        if line[0] in "+- "
    ]
    old_rows, new_rows = _field_rows(old), _field_rows(new)
    fields = []
    for name in [*old_rows, *(name for name in new_rows if name not in old_rows)]:
        before, after = old_rows.get(name), new_rows.get(name)
        if before is None:
            fields.append(FieldChange(name, after[0], "added", None, after[1]))
        elif after is None:
            fields.append(FieldChange(name, before[0], "removed", before[1], None))
        else:
            keys = sorted(set(before[1]) | set(after[1]))
            changed = tuple(key for key in keys if before[1].get(key) != after[1].get(key))
            if before[0] != after[0]:
                changed = ("role", *changed)
            status = "changed" if changed else "unchanged"
            fields.append(FieldChange(name, after[0], status, before[1], after[1], changed))
    old_behaviour, new_behaviour = old.behaviour(), new.behaviour()
    changes = {
        key: (old_behaviour[key], new_behaviour[key])
        for key in ("module_kind", "lm_defaults", "compiled_state")
        if old_behaviour[key] != new_behaviour[key]
    }
    kept_in_old_order = [name for name in old_rows if name in new_rows]
    kept_in_new_order = [name for name in new_rows if name in old_rows]
    if kept_in_old_order != kept_in_new_order:
        changes["field_order"] = (list(old_rows), list(new_rows))
    return VersionDiff(old, new, instructions, fields, changes)
