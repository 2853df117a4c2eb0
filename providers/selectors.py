"""Reads of provider configurations for the other apps."""

from django.db.models import Prefetch, QuerySet

from providers.exceptions import NoProviderConfigured, ProviderNotFound
from providers.models import Provider, ProviderFallback

DEFAULT_PROVIDER_NAME = "local-default"


def provider_list(*, enabled: bool | None = None) -> QuerySet[Provider]:
    """Providers by name, their ordered fallback links prefetched (`fallback_links.all()`)."""
    links = ProviderFallback.objects.select_related("fallback").order_by("position")
    providers = Provider.objects.prefetch_related(Prefetch("fallback_links", queryset=links))
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


def provider_fallback_chain(*, provider: Provider) -> list[Provider]:
    """The provider itself, then its enabled fallbacks in order."""
    return [
        provider,
        *(fallback for fallback in provider_fallbacks(provider=provider) if fallback.enabled),
    ]
