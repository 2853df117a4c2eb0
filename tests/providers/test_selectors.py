import pytest

from providers import selectors, services
from providers.exceptions import NoProviderConfigured, ProviderNotFound
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db


def test_provider_get():
    provider = ProviderFactory(name="one")
    assert selectors.provider_get(name="one") == provider


def test_provider_get_unknown_name():
    with pytest.raises(ProviderNotFound) as caught:
        selectors.provider_get(name="nope")
    assert caught.value.code == "provider_not_found"
    assert "nope" in str(caught.value)


def test_default_prefers_local_default():
    ProviderFactory(name="aaa")
    default = ProviderFactory(name="local-default")
    assert selectors.provider_get_default() == default


def test_default_falls_back_to_the_first_enabled_provider():
    ProviderFactory(name="local-default", enabled=False)
    ProviderFactory(name="aaa", enabled=False)
    second = ProviderFactory(name="bbb")
    assert selectors.provider_get_default() == second


def test_default_without_any_enabled_provider():
    ProviderFactory(enabled=False)
    with pytest.raises(NoProviderConfigured) as caught:
        selectors.provider_get_default()
    assert caught.value.code == "no_provider_configured"


def test_fallback_chain_keeps_order_and_skips_disabled():
    main, first, off, last = (
        ProviderFactory(name="main"),
        ProviderFactory(name="z-first"),
        ProviderFactory(name="off", enabled=False),
        ProviderFactory(name="a-last"),
    )
    services.provider_set_fallbacks(provider=main, fallbacks=[first, off, last])
    assert selectors.provider_fallback_chain(provider=main) == [main, first, last]
    assert selectors.provider_fallback_chain(provider=last) == [last]
