"""The factories obey the services' rules: what they make is valid, what the services refuse
they refuse too."""

import pytest
from django.core.exceptions import ValidationError

from providers.models import Provider, ProviderFallback
from tests.support.factories import (
    APIKeyFactory,
    ProviderFactory,
    SignatureVersionFactory,
    StaffUserFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("kind", ["custom", "openai"])
def test_the_defaults_of_each_kind_are_valid(kind):
    provider = ProviderFactory(kind=kind)
    provider.full_clean()


def test_a_local_provider_needs_its_model_directory(tiny_model_dir, tmp_path):
    assert ProviderFactory(kind="mlx", model=str(tiny_model_dir)).kind == "mlx"
    with pytest.raises(ValidationError, match="does not exist"):
        ProviderFactory(kind="mlx", model=str(tmp_path / "gone"))


def test_invalid_providers_are_refused_like_the_service_refuses_them():
    with pytest.raises(ValidationError, match="needs the base URL"):
        ProviderFactory(kind="openai", base_url="")
    with pytest.raises(ValidationError, match="cannot be imported"):
        ProviderFactory(engine_path="gone.module.Engine")
    assert not Provider.objects.exists()


def test_fallbacks_go_through_the_service():
    spare, other = ProviderFactory(), ProviderFactory()
    main = ProviderFactory(fallbacks=(other, spare))
    links = ProviderFallback.objects.filter(provider=main).order_by("position")
    assert [link.fallback for link in links] == [other, spare]
    with pytest.raises(ValidationError, match="appears twice"):
        ProviderFactory(name="twice", fallbacks=(spare, spare))
    assert not Provider.objects.filter(name="twice").exists()


def test_a_signature_version_is_numbered_by_the_service():
    first = SignatureVersionFactory()
    second = SignatureVersionFactory(
        signature=first.signature, spec=first.behaviour() | {"instructions": "Changed."}
    )
    assert (first.number, second.number) == (1, 2)


def test_users_and_keys():
    user = UserFactory(perms=("providers.view_provider",))
    assert user.check_password("pw")
    assert user.has_perm("providers.view_provider")
    assert StaffUserFactory().is_staff
    api_key = APIKeyFactory()
    assert api_key.raw_key.startswith(f"{api_key.prefix}.")
    assert type(api_key).objects.is_valid(api_key.raw_key)
