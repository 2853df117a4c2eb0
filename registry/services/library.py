"""Loading the template library (``registry.library`` holds its entries) into the registry.

LoadOutcome, what loading one entry did, is also what discovery reports.
"""

from dataclasses import dataclass

from django.db import transaction

from registry import library
from registry.models import Signature, SignatureVersion
from registry.services._common import MaybeUser
from registry.services.aliases import alias_set
from registry.services.signatures import signature_create
from registry.services.versions import signature_version_create
from registry.specs import PRODUCTION, version_spec_validate


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
