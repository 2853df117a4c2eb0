"""Reads of the registry. Writes live in services."""

import json

from django.db import connection
from django.db.models import Prefetch, Q, QuerySet

from registry.exceptions import AliasNotFound, SignatureNotFound, VersionNotFound
from registry.models import Alias, Signature, SignatureVersion
from registry.specs import LATEST, PRODUCTION


def signature_get(*, name: str) -> Signature:
    try:
        return Signature.objects.get(name=name)
    except Signature.DoesNotExist:
        raise SignatureNotFound(f"No signature named '{name}'.") from None


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
    if ref is None or ref == LATEST:
        if ref is None:
            alias = (
                Alias.objects.select_related("version__signature")
                .filter(signature=signature, name=PRODUCTION)
                .first()
            )
            if alias is not None:
                return alias.version
        latest = signature_version_latest(signature=signature)
        if latest is None:
            raise VersionNotFound(f"Signature '{name}' has no versions yet.")
        return latest
    alias = (
        Alias.objects.select_related("version__signature")
        .filter(signature=signature, name=ref)
        .first()
    )
    if alias is None:
        raise AliasNotFound(f"Signature '{name}' has no alias '{ref}'.")
    return alias.version


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
