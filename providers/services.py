"""Writes of provider configurations: create, update, fallback lists, delete, the default.

Every write validates the whole row once (`full_clean`, whose rules are
`providers.validation`); a fallback list is checked for cycles under the fallback graph's
lock, in `provider_set_fallbacks`.
"""

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import ProtectedError

from providers.calls import provider_route
from providers.exceptions import ProviderInUse
from providers.models import PROVIDER_FIELDS, Provider, ProviderFallback, ProviderPoolMember
from providers.selectors import DEFAULT_PROVIDER_NAME
from providers.validation import provider_pool_member_errors

# A pool's member and its weight, as the API and the admin give them.
PoolMemberSpec = tuple[Provider, int]


def provider_fallback_errors(*, provider: Provider, fallbacks: list[Provider]) -> list[str]:
    """Why `fallbacks` cannot be the provider's fallback list (empty when it can)."""
    errors = []
    seen: set[int] = set()
    for fallback in fallbacks:
        if fallback.pk is not None and fallback.pk == provider.pk:
            errors.append(f"{provider.name!r} cannot fall back to itself.")
        elif fallback.pk in seen:
            errors.append(f"{fallback.name!r} appears twice in the fallback list.")
        seen.add(fallback.pk)
    if provider.pk is None or errors:
        return errors
    for fallback in fallbacks:
        cycle = _path_to(start=fallback, target=provider)
        if cycle:
            route = " -> ".join([provider.name, *(item.name for item in cycle)])
            errors.append(f"Falling back to {fallback.name!r} makes a cycle: {route}.")
    return errors


def _path_to(*, start: Provider, target: Provider) -> list[Provider]:
    """A fallback path from `start` to `target` through stored links, or [] when none exists."""
    parents: dict[int, Provider | None] = {start.pk: None}
    by_pk = {start.pk: start}
    frontier = [start.pk]
    while frontier:
        links = ProviderFallback.objects.filter(provider_id__in=frontier).select_related("fallback")
        frontier = []
        for link in links:
            if link.fallback_id in parents:
                continue
            parents[link.fallback_id] = by_pk[link.provider_id]
            by_pk[link.fallback_id] = link.fallback
            if link.fallback_id == target.pk:
                path = [link.fallback]
                node = by_pk[link.provider_id]
                while node is not None:
                    path.append(node)
                    node = parents[node.pk]
                return list(reversed(path))
            frontier.append(link.fallback_id)
    return []


@transaction.atomic
def provider_create(
    *,
    fallbacks: list[Provider] | None = None,
    members: list[PoolMemberSpec] | None = None,
    **fields: Any,
) -> Provider:
    unknown = set(fields) - set(PROVIDER_FIELDS)
    if unknown:
        raise TypeError(f"Unknown provider fields: {sorted(unknown)}")
    provider = Provider(**fields)
    provider.full_clean()
    provider.save()
    if fallbacks:
        provider_set_fallbacks(provider=provider, fallbacks=fallbacks)
    if members:
        provider_set_members(pool=provider, members=members)
    return provider


@transaction.atomic
def provider_update(
    *,
    provider: Provider,
    data: dict[str, Any],
    fallbacks: list[Provider] | None = None,
    members: list[PoolMemberSpec] | None = None,
) -> Provider:
    """Apply `data` (and a new fallback list when given); nothing is kept unless all is valid.

    The fallback list is validated by `provider_set_fallbacks`, under the provider's row lock;
    when it is refused, the transaction takes the row's changes back too.
    """
    unknown = set(data) - set(PROVIDER_FIELDS)
    if unknown:
        raise TypeError(f"Unknown provider fields: {sorted(unknown)}")
    for field, value in data.items():
        setattr(provider, field, value)
    provider.full_clean()
    provider.save()
    if fallbacks is not None:
        provider_set_fallbacks(provider=provider, fallbacks=fallbacks)
    if members is not None:
        provider_set_members(pool=provider, members=members)
    _check_pools_of(provider=provider)
    return provider


def _lock_fallback_graph() -> None:
    """Take the lock that serialises every change of the fallback graph, until commit.

    A cycle check must see every link that could close a cycle with this edit, and row locks
    cannot promise that: edits of unrelated providers (a -> b beside c -> d, with b -> c and
    d -> a stored) each see no cycle and together make one. SQLite serialises writers itself.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('providers.fallback_graph'))")


@transaction.atomic
def provider_set_fallbacks(*, provider: Provider, fallbacks: list[Provider]) -> None:
    """Replace the provider's ordered fallback list (first entry tried first)."""
    # The provider's row before the graph lock, as every edit of the provider takes them (a
    # saved form or provider_update holds the row already), so two edits cannot deadlock.
    # NO KEY UPDATE: an edit holding the graph lock may add a link to this provider, which
    # needs only a key-share lock on its row.
    Provider.objects.select_for_update(no_key=True).filter(pk=provider.pk).first()
    _lock_fallback_graph()
    errors = provider_fallback_errors(provider=provider, fallbacks=fallbacks)
    if errors:
        raise ValidationError({"fallbacks": errors})
    ProviderFallback.objects.filter(provider=provider).delete()
    ProviderFallback.objects.bulk_create(
        ProviderFallback(provider=provider, fallback=fallback, position=position)
        for position, fallback in enumerate(fallbacks)
    )
    # The row's updated_at marks a configuration change (cached LMs compare it).
    provider.save(update_fields=["updated_at"])


def provider_pool_errors(*, pool: Provider, members: list[Provider]) -> list[str]:
    """Why `members` cannot be the pool's members (empty when they can)."""
    routes = [provider_route(provider=member) for member in members]
    return provider_pool_member_errors(pool=pool, members=members, routes=routes)


def provider_membership_errors(*, provider: Provider) -> list[str]:
    """Why `provider`, as it is in memory, no longer fits the pools it belongs to (it became a
    pool, or moved to another cluster than the other members); empty when it fits."""
    errors = []
    for pool in Provider.objects.filter(pool_members__member_id=provider.pk).distinct():
        members = [
            provider if link.member_id == provider.pk else link.member
            for link in ProviderPoolMember.objects.filter(pool=pool).select_related("member")
        ]
        errors.extend(
            f"As a member of the pool {pool.name!r}: {error}"
            for error in provider_pool_errors(pool=pool, members=members)
        )
    return errors


def _check_pools_of(*, provider: Provider) -> None:
    """After an edit of `provider`: it still fits each pool it belongs to, and a provider that
    stopped being a pool has no members left. Under the graph's lock, as
    `provider_set_members`."""
    _lock_fallback_graph()
    if (
        provider.kind != Provider.Kind.POOL
        and ProviderPoolMember.objects.filter(pool=provider).exists()
    ):
        raise ValidationError(
            {"kind": ["A pool with members cannot change its kind: remove its members first."]}
        )
    errors = provider_membership_errors(provider=provider)
    if errors:
        raise ValidationError({"kind": errors})


@transaction.atomic
def provider_set_members(*, pool: Provider, members: list[PoolMemberSpec]) -> None:
    """Replace the pool's members (provider, weight), in order. Under the graph's lock, so
    that no member turns into a pool, or moves cluster, while it is being added."""
    Provider.objects.select_for_update(no_key=True).filter(pk=pool.pk).first()
    _lock_fallback_graph()
    errors = provider_pool_errors(pool=pool, members=[member for member, _ in members])
    errors.extend(
        f"The weight of {member.name!r} must be at least 1 (got {weight})."
        for member, weight in members
        if weight < 1
    )
    if errors:
        raise ValidationError({"members": errors})
    ProviderPoolMember.objects.filter(pool=pool).delete()
    ProviderPoolMember.objects.bulk_create(
        ProviderPoolMember(pool=pool, member=member, weight=weight, position=position)
        for position, (member, weight) in enumerate(members)
    )
    pool.save(update_fields=["updated_at"])


@transaction.atomic
def provider_delete(*, provider: Provider) -> None:
    """Delete a provider (and the fallback links to and from it) unless records point at it."""
    try:
        provider.delete()
    except ProtectedError as exc:
        raise ProviderInUse(provider.name) from exc


@transaction.atomic
def provider_ensure_default(*, model_path: Path) -> Provider:
    """Register (or point at `model_path`) the default local provider `local-default`."""
    provider = Provider.objects.select_for_update().filter(name=DEFAULT_PROVIDER_NAME).first()
    if provider is None:
        return provider_create(
            name=DEFAULT_PROVIDER_NAME,
            kind=Provider.Kind.MLX,
            model=str(model_path),
            max_tokens=64,
            temperature=0.0,
            timeout_s=120.0,
        )
    changes = {"model": str(model_path), "kind": Provider.Kind.MLX}
    if any(getattr(provider, field) != value for field, value in changes.items()):
        provider = provider_update(provider=provider, data=changes)
    return provider
