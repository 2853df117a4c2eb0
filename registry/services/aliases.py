"""Aliases: a signature's named pointers (``production``, ``staging``) to its versions.

Setting, moving and removing one each leave an AliasChange record.
"""

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from registry.exceptions import AliasConflict, AliasNotFound, InvalidSpec, VersionNotFound
from registry.models import Alias, AliasChange, Signature, SignatureVersion
from registry.services._common import MaybeUser, user_or_none
from registry.specs import alias_name_problem

# "Expect the alias to be absent" differs from "expect nothing": a sentinel marks the latter.
ANY_VERSION: Any = object()


@dataclass(frozen=True)
class AliasSetResult:
    alias: Alias
    previous: SignatureVersion | None
    changed: bool


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
            signature=locked, name=name, version=version, updated_by=user_or_none(user)
        )
    else:
        alias.version = version
        alias.updated_by = user_or_none(user)
        alias.save(update_fields=["version", "updated_by", "updated_at"])
    AliasChange.objects.create(
        signature=locked,
        alias_name=name,
        from_version=previous,
        to_version=version,
        changed_by=user_or_none(user),
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
        changed_by=user_or_none(user),
    )
    alias.delete()
