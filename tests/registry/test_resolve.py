"""signature_version_resolve: numbers, aliases, the implicit `latest`, the production default."""

import pytest

from registry.exceptions import (
    AliasNotFound,
    RegistryError,
    SignatureNotFound,
    VersionNotFound,
)
from registry.models import Alias, Signature, SignatureVersion
from registry.selectors import signature_version_resolve

pytestmark = pytest.mark.django_db


def _version(signature: Signature, number: int, instructions: str) -> SignatureVersion:
    version = SignatureVersion(
        signature=signature,
        number=number,
        instructions=instructions,
        input_fields=[{"name": "question", "type": "str", "description": "", "prefix": None}],
        output_fields=[{"name": "answer", "type": "str", "description": "", "prefix": None}],
    )
    version.save()
    return version


@pytest.fixture
def qa() -> Signature:
    signature = Signature.objects.create(name="qa")
    for number in (1, 2, 3):
        _version(signature, number, f"Answer, take {number}.")
    return signature


def test_none_means_latest_without_production(qa):
    assert signature_version_resolve(name="qa").number == 3


def test_none_means_production_when_set(qa):
    Alias.objects.create(signature=qa, name="production", version=qa.versions.get(number=1))
    assert signature_version_resolve(name="qa").number == 1
    assert signature_version_resolve(name="qa", ref="latest").number == 3


@pytest.mark.parametrize("ref", [2, "2"])
def test_number_as_int_or_digit_string(qa, ref):
    assert signature_version_resolve(name="qa", ref=ref).number == 2


def test_alias_name(qa):
    Alias.objects.create(signature=qa, name="staging", version=qa.versions.get(number=2))
    version = signature_version_resolve(name="qa", ref="staging")
    assert (version.signature.name, version.number) == ("qa", 2)


@pytest.mark.parametrize(
    ("name", "ref", "error", "code"),
    [
        ("nope", None, SignatureNotFound, "signature_not_found"),
        ("qa", 9, VersionNotFound, "version_not_found"),
        ("qa", "9", VersionNotFound, "version_not_found"),
        ("qa", "staging", AliasNotFound, "alias_not_found"),
    ],
)
def test_errors_carry_codes_and_messages(qa, name, ref, error, code):
    with pytest.raises(error) as caught:
        signature_version_resolve(name=name, ref=ref)
    assert isinstance(caught.value, RegistryError)
    assert caught.value.code == code
    assert name in str(caught.value)


def test_signature_without_versions():
    Signature.objects.create(name="empty")
    with pytest.raises(VersionNotFound):
        signature_version_resolve(name="empty")
