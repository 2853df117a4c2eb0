"""Fixtures of the providers tests: staff users with and without the provider permissions."""

import pytest
from django.contrib.auth.models import Permission, User

from tests.support.factories import StaffUserFactory


@pytest.fixture
def operator(db) -> User:
    """A staff user allowed to manage providers."""
    codenames = Permission.objects.filter(content_type__app_label="providers").values_list(
        "codename", flat=True
    )
    return StaffUserFactory(username="operator", perms=[f"providers.{c}" for c in codenames])


@pytest.fixture
def viewer(db) -> User:
    """A staff user without provider permissions."""
    return StaffUserFactory(username="viewer")


@pytest.fixture
def operator_client(client, operator):
    """pytest-django's `client`, logged in as `operator`."""
    client.force_login(operator)
    return client
