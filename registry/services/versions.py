"""Versions: checking a spec completely, adding a version, and building a runnable program.

Saved versions never change; a new behaviour is a new version with the next number.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dspy
from django.db import transaction
from django.utils import timezone

from registry.exceptions import InvalidSpec
from registry.models import Signature, SignatureVersion
from registry.programs import compiled_state_check, program_build
from registry.selectors import signature_version_latest
from registry.services._common import MaybeUser, user_or_none
from registry.specs import VersionSpec, text_problem, version_spec_validate


@dataclass(frozen=True)
class VersionCreateResult:
    version: SignatureVersion
    created: bool


def version_spec_check(*, name: str, data: dict[str, Any] | VersionSpec) -> VersionSpec:
    """Validate a spec completely, including that its compiled state loads into DSPy."""
    spec = data if isinstance(data, VersionSpec) else version_spec_validate(data)
    compiled_state_check(name=name, behaviour=spec.as_dict())
    return spec


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
        author=user_or_none(author),
        **spec.as_dict(),
    )
    if created_at is not None:
        version.created_at = created_at
    version.save()
    Signature.objects.filter(pk=locked.pk).update(updated_at=timezone.now())
    return VersionCreateResult(version=version, created=True)


def signature_version_build(*, version: SignatureVersion) -> dspy.Module:
    """A fresh, runnable DSPy module for ``version``.

    The signature is made with ``dspy.make_signature`` and the fields' real types
    (``typing.Literal[...]`` for choices), wrapped in the version's module kind, with its
    compiled state (demos, optimised instructions) loaded when present. Each call returns a
    new module, so callers may configure it freely.
    """
    return program_build(name=version.signature.name, behaviour=version.behaviour())


# Programs built once per process and shared (`signature_version_program`): one per version in
# use, so a few hundred cover any service, and an entry is a few kilobytes of Python objects.
_PROGRAMS_KEPT = 256
_programs: "OrderedDict[tuple[str, str], dspy.Module]" = OrderedDict()
_programs_lock = threading.Lock()


def signature_version_program(*, version: SignatureVersion) -> dspy.Module:
    """The runnable module of ``version``, built once per process and shared by every caller
    and thread: do not configure or compile it (``signature_version_build`` gives a module of
    your own). Building one (the signature class, the module, its demos) costs milliseconds,
    more than a fast provider's whole call; a version never changes, so neither does its
    program. Kept by the version's content, so a new version, or another database whose ids
    repeat (tests), never meets another's program."""
    key = (version.signature.name, version.content_hash)
    with _programs_lock:
        program = _programs.get(key)
        if program is not None:
            _programs.move_to_end(key)
            return program
    program = signature_version_build(version=version)
    with _programs_lock:
        _programs[key] = program
        while len(_programs) > _PROGRAMS_KEPT:
            _programs.popitem(last=False)
    return program
