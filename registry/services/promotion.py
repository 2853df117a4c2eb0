"""Promotion: moving an alias (`production` by default) to a version on the strength of its
scores, never on hope.

The candidate's newest VersionScore on exactly the given data (content hash and split) and
metric must beat the alias's current version's newest score on the same, strictly. An editor
may force a move anyway; the Promotion row says so. Every promotion records both scores, and
the alias move itself leaves its AliasChange (`alias_set`).
"""

from typing import Any

from django.db import transaction

from core.errors import Conflict
from registry.exceptions import InvalidSpec, RegistryError, VersionNotFound
from registry.models import Alias, Promotion, Signature, SignatureVersion
from registry.services._common import MaybeUser, user_or_none
from registry.services.aliases import alias_set
from registry.services.scores import version_score_latest
from registry.specs import PRODUCTION, alias_name_problem

# Who may force a promotion: those who may edit signatures (the console's "editors").
FORCE_PERMISSION = "registry.change_signature"


class ScoreMissing(RegistryError, Conflict):
    code = "score_missing"


class NotBetter(RegistryError, Conflict):
    code = "not_better"


class AlreadyPromoted(RegistryError, Conflict):
    code = "already_promoted"


class ForceNotAllowed(RegistryError):
    code = "force_not_allowed"
    status_code = 403
    default_message = f"Only an editor (`{FORCE_PERMISSION}`) may force a promotion."


def _data(dataset_hash: str, split: str, metric: str) -> str:
    return f"{metric} on `{split}` of dataset {dataset_hash[:12]}"


def _figure(score) -> str:
    return f"{score.score:.3f} ({score.examples} examples)"


def promotion_may_force(*, user: MaybeUser) -> bool:
    """A command at the shell (no user) is trusted; a user needs the editors' permission."""
    return user is None or bool(getattr(user, "has_perm", None) and user.has_perm(FORCE_PERMISSION))


@transaction.atomic
def version_promote(
    *,
    signature: Signature,
    version: SignatureVersion,
    alias: str = PRODUCTION,
    dataset_hash: str,
    split: str,
    metric: str,
    force: bool = False,
    reason: str = "",
    user: MaybeUser = None,
) -> Promotion:
    """Point `alias` at `version` when its score beats the current version's, or with force.

    Raises ScoreMissing (either version has no score on this data and metric), NotBetter
    (both figures in the message), AlreadyPromoted, VersionNotFound (another signature's
    version) or ForceNotAllowed; nothing changes then.
    """
    problem = alias_name_problem(alias)
    if problem:
        raise InvalidSpec({"alias": [problem]})
    if version.signature_id != signature.pk:
        raise VersionNotFound(
            f"Version {version.number} belongs to '{version.signature.name}', not to "
            f"'{signature.name}'."
        )
    if force and not promotion_may_force(user=user):
        raise ForceNotAllowed()
    # Locked, so a concurrent promotion compares against the version it really replaces.
    locked = Signature.objects.select_for_update().get(pk=signature.pk)
    pointer = Alias.objects.select_related("version").filter(signature=locked, name=alias).first()
    current = pointer.version if pointer else None
    if current is not None and current.pk == version.pk:
        raise AlreadyPromoted(
            f"Alias '{alias}' of '{signature.name}' points at version {version.number} already."
        )
    data = _data(dataset_hash, split, metric)
    lookup = {"dataset_hash": dataset_hash, "split": split, "metric": metric}
    candidate = version_score_latest(version=version, **lookup)
    incumbent = version_score_latest(version=current, **lookup) if current else None
    if not force:
        if candidate is None:
            raise ScoreMissing(
                f"Version {version.number} has no score for {data}: evaluate it on that data "
                "first (or force the promotion)."
            )
        if current is not None and incumbent is None:
            raise ScoreMissing(
                f"Version {current.number} ('{alias}' now) has no score for {data}, so version "
                f"{version.number} ({_figure(candidate)}) cannot be shown to beat it: evaluate "
                f"version {current.number} on that data first (or force the promotion)."
            )
        if incumbent is not None and candidate.score <= incumbent.score:
            raise NotBetter(
                f"Version {version.number} scores {_figure(candidate)}, not better than "
                f"version {current.number} ('{alias}' now) at {_figure(incumbent)}, for {data}; "
                f"'{alias}' stays at version {current.number}."
            )
    alias_set(signature=locked, name=alias, version=version, user=user)
    return Promotion.objects.create(
        signature=locked,
        alias_name=alias,
        from_version=current,
        to_version=version,
        from_score=incumbent.score if incumbent else None,
        to_score=candidate.score if candidate else None,
        dataset_hash=dataset_hash,
        split=split,
        metric=metric,
        forced=force,
        reason=(reason or "").strip(),
        promoted_by=user_or_none(user),
    )


def promotion_list(*, signature: Signature) -> Any:
    return Promotion.objects.filter(signature=signature).select_related(
        "from_version", "to_version", "promoted_by"
    )
