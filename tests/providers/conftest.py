from pathlib import Path

import pytest
from django.conf import settings
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


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real default model, installed once into VAR_DIR/models (idempotent, kept between runs).

    Installing it here rather than through the command keeps the fixture free of the database;
    the tests that need the registered provider run the command, which then only registers it.
    """
    from providers.mlx.default_model import install_default_model

    return install_default_model(models_dir=Path(settings.VAR_DIR) / "models", progress=print)
