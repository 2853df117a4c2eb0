"""Reads of provider configurations for the other apps."""

from collections.abc import Iterable
from datetime import datetime

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from providers.breakers import BreakerStatus, BreakerTransition, breaker_status
from providers.exceptions import NoProviderConfigured, ProviderNotFound
from providers.models import (
    BreakerEvent,
    CircuitBreaker,
    Provider,
    ProviderFallback,
    ProviderPoolMember,
)

DEFAULT_PROVIDER_NAME = "local-default"


def provider_list(*, enabled: bool | None = None, members: bool = False) -> QuerySet[Provider]:
    """Providers by name, their ordered fallback links prefetched (`fallback_links.all()`), and
    with `members` their pool members too (`pool_members.all()`, each with its `member`)."""
    links = ProviderFallback.objects.select_related("fallback").order_by("position")
    providers = Provider.objects.prefetch_related(Prefetch("fallback_links", queryset=links))
    if members:
        pool_members = ProviderPoolMember.objects.select_related("member").order_by("position")
        providers = providers.prefetch_related(Prefetch("pool_members", queryset=pool_members))
    if enabled is not None:
        providers = providers.filter(enabled=enabled)
    return providers.order_by("name")


def provider_get(*, name: str) -> Provider:
    try:
        return Provider.objects.get(name=name)
    except Provider.DoesNotExist:
        raise ProviderNotFound(name) from None


def provider_get_default() -> Provider:
    """The default local provider when it is enabled, else the first enabled provider by name."""
    provider = (
        Provider.objects.filter(enabled=True, name=DEFAULT_PROVIDER_NAME).first()
        or Provider.objects.filter(enabled=True).order_by("name").first()
    )
    if provider is None:
        raise NoProviderConfigured()
    return provider


def provider_fallbacks(*, provider: Provider) -> list[Provider]:
    """The provider's fallback list in order, enabled or not."""
    links = (
        ProviderFallback.objects.filter(provider=provider)
        .select_related("fallback")
        .order_by("position")
    )
    return [link.fallback for link in links]


def provider_pool_members(*, pool: Provider) -> list[ProviderPoolMember]:
    """The pool's member links in order (`link.member`, `link.weight`), enabled or not."""
    return list(
        ProviderPoolMember.objects.filter(pool_id=pool.pk)
        .select_related("member")
        .order_by("position")
    )


def provider_fallback_chain(*, provider: Provider) -> list[Provider]:
    """The provider itself, then its enabled fallbacks in order."""
    return [
        provider,
        *(fallback for fallback in provider_fallbacks(provider=provider) if fallback.enabled),
    ]


_LAST_EVENT_FIELDS = ("at", "from_state", "to_state", "reason")


def provider_breaker_statuses(
    *, providers: Iterable[Provider], now: datetime
) -> dict[int, BreakerStatus]:
    """The read-time status of each provider's breaker (`breaker_status`), by provider id, in
    one query whatever their number; a provider never called reads as a closed breaker."""
    providers = list(providers)
    last_event = BreakerEvent.objects.filter(breaker=OuterRef("pk")).order_by("-at", "-id")
    breakers = CircuitBreaker.objects.filter(provider__in=providers).annotate(
        **{f"last_{name}": Subquery(last_event.values(name)[:1]) for name in _LAST_EVENT_FIELDS}
    )
    found = {breaker.provider_id: breaker for breaker in breakers}
    statuses = {}
    for provider in providers:
        breaker = found.get(provider.pk) or CircuitBreaker(provider=provider)
        # The provider as given, not a query per breaker for its name.
        breaker.provider = provider
        transition = None
        if getattr(breaker, "last_at", None) is not None:
            transition = BreakerTransition(
                **{name: getattr(breaker, f"last_{name}") for name in _LAST_EVENT_FIELDS}
            )
        statuses[provider.pk] = breaker_status(breaker=breaker, now=now, last_transition=transition)
    return statuses


def provider_breaker_status(*, provider: Provider, now: datetime) -> BreakerStatus:
    return provider_breaker_statuses(providers=[provider], now=now)[provider.pk]
