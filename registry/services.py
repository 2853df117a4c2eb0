"""Writes to the registry, and building runnable DSPy programs from stored versions."""

import importlib
import inspect
import math
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

import dspy
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from registry import library
from registry.exceptions import (
    AliasConflict,
    AliasNotFound,
    ImportFileError,
    InputValidationError,
    InvalidSpec,
    SignatureAlreadyExists,
    VersionNotFound,
    errors_flatten,
)
from registry.models import Alias, AliasChange, Signature, SignatureVersion
from registry.programs import (
    UnsupportedSignature,
    compiled_state_check,
    program_build,
    program_describe,
    signature_describe,
    snake_case,
)
from registry.selectors import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, signature_version_latest
from registry.specs import (
    PRODUCTION,
    FieldType,
    ModuleKind,
    VersionSpec,
    alias_name_problem,
    name_problem,
    tags_normalize,
    text_problem,
    version_spec_validate,
)

MaybeUser = AbstractBaseUser | None

# "Expect the alias to be absent" differs from "expect nothing": a sentinel marks the latter.
ANY_VERSION: Any = object()


@dataclass(frozen=True)
class VersionCreateResult:
    version: SignatureVersion
    created: bool


@dataclass(frozen=True)
class AliasSetResult:
    alias: Alias
    previous: SignatureVersion | None
    changed: bool


def version_spec_check(*, name: str, data: dict[str, Any] | VersionSpec) -> VersionSpec:
    """Validate a spec completely, including that its compiled state loads into DSPy."""
    spec = data if isinstance(data, VersionSpec) else version_spec_validate(data)
    compiled_state_check(name=name, behaviour=spec.as_dict())
    return spec


def _user_or_none(user: MaybeUser) -> Any:
    # Only a stored user can be an author: not an anonymous user, not an API-key client.
    return user if getattr(user, "pk", None) is not None else None


@transaction.atomic
def signature_create(
    *,
    name: str,
    description: str = "",
    tags: list[str] | None = None,
    author: MaybeUser = None,
) -> Signature:
    errors: dict[str, list[str]] = {}
    problem = name_problem(name)
    if problem:
        errors["name"] = [problem]
    problem = text_problem(description)
    if problem:
        errors["description"] = [f"The description {problem}"]
    try:
        tags = tags_normalize(tags)
    except InvalidSpec as exc:
        errors |= exc.errors
    if errors:
        raise InvalidSpec(errors)
    if Signature.objects.filter(name=name).exists():
        raise SignatureAlreadyExists(f"A signature named '{name}' exists already.")
    try:
        with transaction.atomic():
            return Signature.objects.create(
                name=name,
                description=description.strip(),
                tags=tags,
                created_by=_user_or_none(author),
            )
    except IntegrityError:
        # Another request created the same name between the check and the insert.
        raise SignatureAlreadyExists(f"A signature named '{name}' exists already.") from None


@transaction.atomic
def signature_update(
    *, signature: Signature, description: str | None = None, tags: list[str] | None = None
) -> Signature:
    """Change a signature's documentation. Behaviour only changes through new versions."""
    update_fields = ["updated_at"]
    if description is not None:
        problem = text_problem(description)
        if problem:
            raise InvalidSpec({"description": [f"The description {problem}"]})
        signature.description = description.strip()
        update_fields.append("description")
    if tags is not None:
        signature.tags = tags_normalize(tags)
        update_fields.append("tags")
    signature.save(update_fields=update_fields)
    return signature


@transaction.atomic
def signature_version_create(
    *,
    signature: Signature,
    spec: dict[str, Any] | VersionSpec,
    changelog: str = "",
    author: MaybeUser = None,
    created_at: datetime | None = None,
) -> VersionCreateResult:
    """Add a version with the next number, unless it is identical to the latest one.

    The signature row is locked for the duration, so concurrent additions get distinct,
    gapless numbers.
    """
    spec = version_spec_check(name=signature.name, data=spec)
    problem = text_problem(changelog or "")
    if problem:
        raise InvalidSpec({"changelog": [f"The changelog {problem}"]})
    locked = Signature.objects.select_for_update().get(pk=signature.pk)
    latest = signature_version_latest(signature=locked)
    if latest is not None and latest.content_hash == spec.content_hash:
        return VersionCreateResult(version=latest, created=False)
    version = SignatureVersion(
        signature=locked,
        number=(latest.number + 1) if latest else 1,
        changelog=(changelog or "").strip(),
        author=_user_or_none(author),
        **spec.as_dict(),
    )
    if created_at is not None:
        version.created_at = created_at
    version.save()
    Signature.objects.filter(pk=locked.pk).update(updated_at=timezone.now())
    return VersionCreateResult(version=version, created=True)


@transaction.atomic
def alias_set(
    *,
    signature: Signature,
    name: str,
    version: SignatureVersion,
    user: MaybeUser = None,
    expected_version: int | None = ANY_VERSION,
) -> AliasSetResult:
    """Point alias ``name`` of ``signature`` at ``version``, creating the alias if needed.

    With ``expected_version`` (a version number, or None for "the alias must not exist yet")
    the move only happens if the alias still points there, otherwise AliasConflict: a client
    that read the alias, decided, and wrote back never overwrites a move it did not see.
    The signature row is locked, so concurrent moves are serialised and each one's audit
    record names the version it really moved from.
    """
    problem = alias_name_problem(name)
    if problem:
        raise InvalidSpec({"name": [problem]})
    if version.signature_id != signature.pk:
        raise VersionNotFound(
            f"Version {version.number} belongs to '{version.signature.name}', "
            f"not to '{signature.name}'."
        )
    locked = Signature.objects.select_for_update().get(pk=signature.pk)
    alias = Alias.objects.select_related("version").filter(signature=locked, name=name).first()
    previous = alias.version if alias else None
    if expected_version is not ANY_VERSION:
        current_number = previous.number if previous else None
        if current_number != expected_version:
            shown = f"version {current_number}" if current_number else "nothing"
            raise AliasConflict(
                f"Alias '{name}' of '{signature.name}' points at {shown}, not at "
                f"{'version ' + str(expected_version) if expected_version else 'nothing'}."
            )
    if previous is not None and previous.pk == version.pk:
        return AliasSetResult(alias=alias, previous=previous, changed=False)
    if alias is None:
        alias = Alias.objects.create(
            signature=locked, name=name, version=version, updated_by=_user_or_none(user)
        )
    else:
        alias.version = version
        alias.updated_by = _user_or_none(user)
        alias.save(update_fields=["version", "updated_by", "updated_at"])
    AliasChange.objects.create(
        signature=locked,
        alias_name=name,
        from_version=previous,
        to_version=version,
        changed_by=_user_or_none(user),
    )
    return AliasSetResult(alias=alias, previous=previous, changed=True)


@transaction.atomic
def alias_remove(*, signature: Signature, name: str, user: MaybeUser = None) -> None:
    locked = Signature.objects.select_for_update().get(pk=signature.pk)
    alias = None
    if alias_name_problem(name) is None:  # a name against the rules is never stored
        alias = Alias.objects.select_related("version").filter(signature=locked, name=name).first()
    if alias is None:
        raise AliasNotFound(f"Signature '{signature.name}' has no alias '{name}'.")
    AliasChange.objects.create(
        signature=locked,
        alias_name=name,
        from_version=alias.version,
        to_version=None,
        changed_by=_user_or_none(user),
    )
    alias.delete()


def signature_version_build(*, version: SignatureVersion) -> dspy.Module:
    """A fresh, runnable DSPy module for ``version``.

    The signature is made with ``dspy.make_signature`` and the fields' real types
    (``typing.Literal[...]`` for choices), wrapped in the version's module kind, with its
    compiled state (demos, optimised instructions) loaded when present. Each call returns a
    new module, so callers may configure it freely.
    """
    return program_build(name=version.signature.name, behaviour=version.behaviour())


def _input_error(code: str, message: str) -> list[dict[str, str]]:
    return [{"code": code, "message": message}]


def _coerce(field: dict[str, Any], value: Any) -> tuple[Any, list[dict[str, str]] | None]:
    """The value as the field's type, or the error. JSON types only; no string parsing."""
    field_type = field["type"]
    if field_type == FieldType.STR:
        ok = isinstance(value, str)
        expected = "a string"
    elif field_type == FieldType.INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer (a JSON number without a fraction)"
    elif field_type == FieldType.FLOAT:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a finite number"
        value = float(value) if ok else value
    elif field_type == FieldType.BOOL:
        ok = isinstance(value, bool)
        expected = "a boolean (true or false)"
    elif field_type == FieldType.LIST_STR:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        expected = "a list of strings"
        value = list(value) if ok else value
    elif field_type == FieldType.DICT:
        ok = isinstance(value, dict)
        expected = "an object"
        value = dict(value) if ok else value
    else:
        choices = field["choices"]
        if not isinstance(value, str):
            ok, expected = False, f"one of the strings {', '.join(choices)}"
        elif value not in choices:
            return None, _input_error(
                "invalid_choice",
                f"'{value}' is not one of the choices: {', '.join(choices)}.",
            )
        else:
            ok, expected = True, ""
    if not ok:
        return None, _input_error(
            "wrong_type", f"Expected {expected}, got {_json_type_name(value)}."
        )
    return value, None


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def signature_version_validate_inputs(
    *, version: SignatureVersion, inputs: dict[str, Any]
) -> dict[str, Any]:
    """Check an execute request's inputs against the version's input fields.

    Every input field is required; a value must already have the field's JSON type (``"3"``
    is not an int, ``1`` is not a bool); a Literal value must be one of the choices. Returns
    the inputs in field order, floats as floats. Raises InputValidationError listing every
    problem at once.
    """
    if not isinstance(inputs, dict):
        raise InputValidationError(
            {
                "non_field_errors": _input_error(
                    "wrong_type",
                    f"Inputs must be an object mapping field names to values, "
                    f"got {_json_type_name(inputs)}.",
                )
            }
        )
    errors: dict[str, list[dict[str, str]]] = {}
    known = {field["name"] for field in version.input_fields}
    for name in inputs:
        if name not in known:
            errors[str(name)] = _input_error(
                "unknown_field",
                f"'{name}' is not an input of {version}; the inputs are "
                f"{', '.join(field['name'] for field in version.input_fields)}.",
            )
    coerced: dict[str, Any] = {}
    for field in version.input_fields:
        name = field["name"]
        if name not in inputs:
            errors[name] = _input_error("missing", f"The input '{name}' is required.")
            continue
        value, problem = _coerce(field, inputs[name])
        if problem:
            errors[name] = problem
        else:
            coerced[name] = value
    if errors:
        raise InputValidationError(errors)
    return coerced


@dataclass(frozen=True)
class LoadOutcome:
    """What loading one library or discovered signature did."""

    name: str
    status: str  # created | new_version | unchanged | skipped
    detail: str = ""
    version: SignatureVersion | None = None


@transaction.atomic
def library_load(*, entries: list[dict] | None = None, user: MaybeUser = None) -> list[LoadOutcome]:
    """Load the template library idempotently.

    A missing signature is created with version 1, and its `production` alias points there.
    A library entry whose spec matches any existing version is left alone, so operators'
    own later versions stay latest. A changed entry (a newer toolkit) becomes a new version;
    aliases are never moved for an existing signature.
    """
    outcomes = []
    for entry in entries if entries is not None else library.SIGNATURES:
        spec = version_spec_validate(entry["spec"])
        signature = Signature.objects.filter(name=entry["name"]).first()
        if signature is None:
            signature = signature_create(
                name=entry["name"],
                description=entry["description"],
                tags=entry["tags"],
                author=user,
            )
            version = signature_version_create(
                signature=signature, spec=spec, changelog="From the template library.", author=user
            ).version
            alias_set(signature=signature, name=PRODUCTION, version=version, user=user)
            outcomes.append(LoadOutcome(entry["name"], "created", "version 1, production", version))
            continue
        existing = signature.versions.filter(content_hash=spec.content_hash).first()
        if existing is not None:
            outcomes.append(
                LoadOutcome(
                    entry["name"], "unchanged", f"matches version {existing.number}", existing
                )
            )
            continue
        version = signature_version_create(
            signature=signature,
            spec=spec,
            changelog="Updated template from the library.",
            author=user,
        ).version
        outcomes.append(
            LoadOutcome(
                entry["name"],
                "new_version",
                f"version {version.number}; aliases unchanged",
                version,
            )
        )
    return outcomes


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


def _discovery_candidates(module: ModuleType) -> list[tuple[str, Any]]:
    """Module-level signatures, module classes and module instances, each object once."""
    candidates, seen = [], set()
    for attribute, obj in vars(module).items():  # definition order: the first name wins
        if attribute.startswith("_") or id(obj) in seen:
            continue
        is_signature = isinstance(obj, type) and issubclass(obj, dspy.Signature)
        is_module_class = isinstance(obj, type) and issubclass(obj, dspy.Module)
        if (is_signature or is_module_class) and obj.__module__.split(".")[0] == "dspy":
            continue  # DSPy's own classes, imported for use
        if is_signature or is_module_class or isinstance(obj, dspy.Module):
            seen.add(id(obj))
            candidates.append((attribute, obj))
    return candidates


def _discovered_spec(module_name: str, attribute: str, obj: Any) -> tuple[str, dict[str, Any]]:
    """The registry name and spec of one candidate; UnsupportedSignature says why not."""
    if isinstance(obj, type):
        if obj.__module__ != module_name:
            raise UnsupportedSignature(
                f"imported from {obj.__module__}; run discovery on that module instead"
            )
        name = snake_case(obj.__name__)
        if issubclass(obj, dspy.Signature):
            return name, signature_describe(obj) | {"module_kind": ModuleKind.PREDICT}
        required = [
            parameter.name
            for parameter in list(inspect.signature(obj.__init__).parameters.values())[1:]
            if parameter.default is parameter.empty
            and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        ]
        if required:
            raise UnsupportedSignature(
                f"its constructor needs arguments ({', '.join(required)}), so its signature "
                "cannot be read; expose an instance at module level instead"
            )
        try:
            obj = obj()
        except Exception as exc:  # a user's constructor may raise anything
            raise UnsupportedSignature(f"constructing it failed: {exc}") from None
        return name, program_describe(obj)
    return snake_case(attribute), program_describe(obj)


@transaction.atomic
def signatures_discover(
    *, module_path: str, name_prefix: str = "", dry_run: bool = False, user: MaybeUser = None
) -> list[LoadOutcome]:
    """Register every DSPy signature (and readable module) defined in a Python module.

    Signature classes run with Predict; a module class with a no-argument constructor, or a
    module instance, is registered with its own module kind, signature and demos. A changed
    one becomes a new version; an unchanged one is left alone; anything the registry cannot
    represent is skipped with the reason. ``dry_run`` reports without writing.
    """
    module = importlib.import_module(module_path)
    outcomes = []
    for attribute, obj in _discovery_candidates(module):
        try:
            name, described = _discovered_spec(module.__name__, attribute, obj)
        except UnsupportedSignature as exc:
            outcomes.append(LoadOutcome(attribute, "skipped", str(exc)))
            continue
        name = f"{name_prefix}{name}"
        problem = name_problem(name)
        if problem:
            outcomes.append(LoadOutcome(attribute, "skipped", problem))
            continue
        try:
            spec = version_spec_check(name=name, data=described)
        except InvalidSpec as exc:
            outcomes.append(LoadOutcome(name, "skipped", "; ".join(errors_flatten(exc.errors))))
            continue
        outcomes.append(_discovered_register(module_path, attribute, name, spec, user=user))
    if dry_run:
        transaction.set_rollback(True)
    return outcomes


def _discovered_register(
    module_path: str, attribute: str, name: str, spec: VersionSpec, *, user: MaybeUser
) -> LoadOutcome:
    source = f"{module_path}.{attribute}"
    signature = Signature.objects.filter(name=name).first()
    if signature is None:
        signature = signature_create(
            name=name,
            description=f"Discovered in `{source}`.",
            tags=["discovered"],
            author=user,
        )
        version = signature_version_create(
            signature=signature, spec=spec, changelog=f"Discovered in {source}.", author=user
        ).version
        return LoadOutcome(name, "created", f"version 1 from {source}", version)
    result = signature_version_create(
        signature=signature, spec=spec, changelog=f"Changed in {source}.", author=user
    )
    if result.created:
        return LoadOutcome(name, "new_version", f"version {result.version.number}", result.version)
    return LoadOutcome(
        name, "unchanged", f"same as latest version {result.version.number}", result.version
    )
