"""Fixtures for the registry tests (`make_user` and the specs are suite-wide: tests/support)."""

import copy

import pytest

from registry.models import Signature
from registry.services.library import library_load
from registry.services.signatures import signature_create
from registry.services.versions import signature_version_create
from tests.support.specs import QA_SPEC


@pytest.fixture(autouse=True)
def _library_without_data(tmp_path_factory, monkeypatch):
    """The registry's tests load the templates alone: the shipped starter datasets and
    optimized versions are the subject of tests/registry/test_library_data.py only."""
    monkeypatch.setattr(
        "registry.services.library.LIBRARY_DATA_DIR", tmp_path_factory.mktemp("no_library_data")
    )


@pytest.fixture
def qa_spec() -> dict:
    return copy.deepcopy(QA_SPEC)


@pytest.fixture
def make_signature(db):
    def make(name: str = "qa", *, versions: int = 1, spec: dict | None = None) -> Signature:
        signature = signature_create(name=name, description=f"The {name} signature.")
        for number in range(1, versions + 1):
            body = copy.deepcopy(spec or QA_SPEC)
            body["instructions"] = f"{body['instructions']} (revision {number})"
            signature_version_create(signature=signature, spec=body)
        return signature

    return make


@pytest.fixture
def library(db):
    """The template library, loaded: each template's name -> its version."""
    return {outcome.name: outcome.version for outcome in library_load()}
