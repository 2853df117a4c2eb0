"""Fixtures of the whole suite, registered from tests/conftest.py via `pytest_plugins`.

Each name means one thing in every folder. pytest-django's own `client` (a plain Django test
client), `admin_client` (that client logged in as the superuser `admin_user`) and `admin_user`
keep their stock meaning; the API clients here are `api_client` (an API key) and
`staff_api_client` (a staff session, CSRF enforced). App-specific fixtures live in
tests/<app>/conftest.py.
"""

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.support.engines import ScriptedEngine
from tests.support.factories import APIKeyFactory, StaffUserFactory, UserFactory
from tests.support.servers import OpenAIServer, mlx_lm_server, serving
from tests.support.tiny_model import build_tiny_gguf, build_tiny_model

# Models ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight llama model directory, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_quantized_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with 4-bit weights, like the converted default model."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-quantized-model"), quantized=True)


@pytest.fixture(scope="session")
def tiny_gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a GGUF file, for the converter."""
    return build_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real default model, installed (once, then cached) where the quick start puts it."""
    from django.conf import settings

    from providers.mlx.default_model import install_default_model

    return install_default_model(
        models_dir=Path(settings.VAR_DIR) / "models", progress=lambda _: None
    )


# Engines and servers --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _reset_scripted_engine():
    """Each test sees only the requests its own scripted engines received."""
    ScriptedEngine.reset()
    yield
    ScriptedEngine.reset()


@pytest.fixture
def start_openai_server():
    """Start a fake OpenAI-compatible endpoint: `start_openai_server(mode=..., port=...,
    content=...)` returns a running `OpenAIServer` (see tests/support/servers.py)."""
    with ExitStack() as stack:

        def start(**options) -> OpenAIServer:
            return stack.enter_context(serving(OpenAIServer(**options)))

        yield start


@pytest.fixture
def openai_server(start_openai_server) -> OpenAIServer:
    """A running fake OpenAI-compatible endpoint answering in the ChatAdapter's format; set its
    `mode` (or `content`) to make it fail, stall or answer otherwise."""
    return start_openai_server()


@pytest.fixture(scope="module")
def tiny_server_url(tiny_model_dir) -> str:
    """The base URL of a real `mlx_lm.server` serving the tiny model (one per test module)."""
    with mlx_lm_server(tiny_model_dir) as url:
        yield url


# Time -----------------------------------------------------------------------------------------


class MovableClock:
    """A `now` callable for time-dependent logic (breakers, the reaper) that tests move by hand
    instead of sleeping."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


# Users and API clients ------------------------------------------------------------------------


@pytest.fixture
def make_user(db):
    """`make_user(username="operator", *, perms=(...), **fields)`: a user with password `pw`;
    `perms` are codenames, `app_label.codename` where a codename alone is ambiguous."""

    def make(username: str = "operator", *, perms: tuple[str, ...] = (), **fields):
        return UserFactory(username=username, perms=perms, **fields)

    return make


@pytest.fixture
def api_key(db):
    """An API key row; the key itself is `api_key.raw_key`."""
    return APIKeyFactory(name="client")


@pytest.fixture
def api_client(api_key) -> APIClient:
    """An API client authenticated with `api_key`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key.raw_key}")
    return client


@pytest.fixture
def staff_user(db):
    """A staff user without model permissions."""
    return StaffUserFactory(username="staff")


@pytest.fixture
def staff_api_client(staff_user) -> APIClient:
    """An API client logged in with `staff_user`'s session; CSRF is enforced, as in a browser."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)
    return client
