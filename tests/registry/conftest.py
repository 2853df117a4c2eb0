"""Fixtures for the registry tests."""

import copy

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from registry.models import Signature
from registry.services import signature_create, signature_version_create

QA_SPEC = {
    "instructions": "Answer the question.",
    "input_fields": [{"name": "question", "type": "str", "description": "The question."}],
    "output_fields": [{"name": "answer", "type": "str", "description": "The answer."}],
    "module_kind": "Predict",
}


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
def make_user(db):
    def make(username: str = "operator", *, perms: tuple[str, ...] = (), **extra):
        user = get_user_model().objects.create_user(username=username, password="pw", **extra)
        for codename in perms:
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label="registry", codename=codename)
            )
        return user

    return make
