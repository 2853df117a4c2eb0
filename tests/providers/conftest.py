import pytest
from django.contrib.auth.models import Permission, User

from tests.providers.engines import ScriptedEngine


@pytest.fixture(autouse=True)
def _reset_scripted_engine():
    ScriptedEngine.requests = []
    yield
    ScriptedEngine.requests = []


@pytest.fixture
def operator(db) -> User:
    """A staff user allowed to manage providers."""
    user = User.objects.create_user("operator", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="providers"))
    return user


@pytest.fixture
def viewer(db) -> User:
    """A staff user without provider permissions."""
    return User.objects.create_user("viewer", password="x", is_staff=True)


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client
