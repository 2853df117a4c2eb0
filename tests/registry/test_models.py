"""Saved versions are immutable; numbers and aliases are unique; the database enforces it."""

import pytest
from django.db import IntegrityError, transaction

from registry.exceptions import ImmutableVersionError
from registry.models import Alias, Signature, SignatureVersion
from registry.specs import content_hash

pytestmark = pytest.mark.django_db


def test_saving_a_saved_version_is_refused(make_signature):
    version = make_signature(versions=1).versions.get()
    original = version.instructions
    version.instructions = "Something else."
    with pytest.raises(ImmutableVersionError):
        version.save()
    with pytest.raises(ImmutableVersionError):
        version.save(update_fields=["changelog"])
    version.refresh_from_db()
    assert version.instructions == original


def test_a_copy_with_the_same_primary_key_cannot_overwrite(make_signature):
    version = make_signature(versions=1).versions.get()
    impostor = SignatureVersion(
        pk=version.pk,
        signature=version.signature,
        number=version.number,
        instructions="Overwritten.",
        input_fields=version.input_fields,
        output_fields=version.output_fields,
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        impostor.save()  # an INSERT, never an UPDATE: the primary key clashes
    version.refresh_from_db()
    assert version.instructions != "Overwritten."


def test_deleting_is_refused_one_by_one_and_in_bulk(make_signature):
    signature = make_signature(versions=2)
    with pytest.raises(ImmutableVersionError):
        signature.versions.first().delete()
    with pytest.raises(ImmutableVersionError):
        SignatureVersion.objects.filter(signature=signature).delete()
    with pytest.raises(ImmutableVersionError):
        SignatureVersion.objects.filter(signature=signature).update(instructions="x")
    versions = list(signature.versions.all())
    for version in versions:
        version.changelog = "rewritten"
    with pytest.raises(ImmutableVersionError), transaction.atomic():
        SignatureVersion.objects.bulk_update(versions, ["changelog"])
    assert signature.versions.count() == 2


def test_a_signature_with_versions_cannot_be_deleted(make_signature):
    from django.db.models import ProtectedError

    signature = make_signature(versions=1)
    with pytest.raises(ProtectedError):
        signature.delete()


def test_content_hash_is_computed_on_save(make_signature):
    version = make_signature(versions=1).versions.get()
    assert version.content_hash == content_hash(version.behaviour())


def test_version_numbers_are_unique_per_signature(make_signature):
    signature = make_signature(versions=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        SignatureVersion(
            signature=signature,
            number=1,
            instructions="Duplicate number.",
            input_fields=[],
            output_fields=[],
        ).save()
    other = make_signature("other", versions=1)
    assert other.versions.get().number == 1


def test_version_number_must_be_positive(make_signature):
    signature = make_signature(versions=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        SignatureVersion(
            signature=signature, number=0, instructions="x", input_fields=[], output_fields=[]
        ).save()


def test_aliases_are_unique_per_signature_and_never_latest(make_signature):
    signature = make_signature(versions=2)
    first, second = signature.versions.order_by("number")
    Alias.objects.create(signature=signature, name="production", version=first)
    with pytest.raises(IntegrityError), transaction.atomic():
        Alias.objects.create(signature=signature, name="production", version=second)
    with pytest.raises(IntegrityError), transaction.atomic():
        Alias.objects.create(signature=signature, name="latest", version=second)
    other = make_signature("other", versions=1)
    Alias.objects.create(signature=other, name="production", version=other.versions.get())
    assert Alias.objects.filter(name="production").count() == 2


def test_string_forms(make_signature):
    signature = make_signature(versions=1)
    version = signature.versions.get()
    alias = Alias.objects.create(signature=signature, name="staging", version=version)
    assert (str(signature), str(version), str(alias)) == ("qa", "qa v1", "qa@staging")
    assert Signature.objects.get(name="qa").versions.count() == 1
