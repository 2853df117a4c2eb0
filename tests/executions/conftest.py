"""Fixtures of the executions tests: the `qa` signature and the providers the executions run on.

The suite-wide ones (API clients, the movable clock, fake OpenAI servers, clusters) live in
tests/support/fixtures.py and tests/conftest.py.
"""

import pytest

from providers.models import Provider
from tests.support.engines import BROKEN_ENGINE, ECHO_ENGINE
from tests.support.factories import ProviderFactory, SignatureVersionFactory
from tests.support.specs import QA_LEVEL_SPEC

EXECUTE = "/api/v1/dspy/execute"


@pytest.fixture
def echo_provider(db) -> Provider:
    return ProviderFactory(name="echo", engine_path=ECHO_ENGINE)


@pytest.fixture
def broken_provider(db) -> Provider:
    return ProviderFactory(name="broken", engine_path=BROKEN_ENGINE)


@pytest.fixture
def qa_version(db):
    """Version 1 of the `qa` signature (question: str, level: int -> answer: str)."""
    return SignatureVersionFactory(
        signature__name="qa", signature__description="Questions.", spec=QA_LEVEL_SPEC
    )
