"""The registry's REST API: reads for any client, writes by permission, field-level errors."""

import copy

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from registry.models import AliasChange, Signature
from registry.selectors import signature_version_resolve
from registry.services.aliases import alias_set
from registry.services.versions import signature_version_create
from tests.support.errors import api_error, error_messages

pytestmark = pytest.mark.django_db

WRITE_PERMS = (
    "add_signature",
    "change_signature",
    "add_signatureversion",
    "add_alias",
    "change_alias",
    "delete_alias",
)


@pytest.fixture
def editor(make_user) -> APIClient:
    client = APIClient()
    client.force_login(make_user("editor", perms=WRITE_PERMS, is_staff=True))
    return client


@pytest.fixture
def reader(make_user) -> APIClient:
    client = APIClient()
    client.force_login(make_user("reader", is_staff=True))
    return client


@pytest.fixture
def qa(make_signature):
    signature = make_signature("qa", versions=2)
    alias_set(signature=signature, name="production", version=signature.versions.get(number=1))
    return signature


def test_reading_needs_authentication(qa):
    response = APIClient().get("/api/v1/signatures/")
    assert response.status_code in (401, 403)


def test_list_and_search(reader, qa, make_signature):
    make_signature("summarize", versions=1)
    Signature.objects.filter(name="summarize").update(tags=["text"])
    response = reader.get("/api/v1/signatures/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    first = body["results"][0]
    assert first["name"] == "qa"
    assert first["latest_version"] == 2
    assert first["aliases"] == {"production": 1}
    assert [r["name"] for r in reader.get("/api/v1/signatures/?search=summ").json()["results"]] == [
        "summarize"
    ]
    assert [r["name"] for r in reader.get("/api/v1/signatures/?tag=text").json()["results"]] == [
        "summarize"
    ]
    by_alias = reader.get("/api/v1/signatures/?alias=production").json()["results"]
    assert [r["name"] for r in by_alias] == ["qa"]
    by_kind = reader.get("/api/v1/signatures/?module_kind=ChainOfThought").json()
    assert by_kind["count"] == 0


def test_retrieve_signature_with_versions_and_aliases(reader, qa):
    body = reader.get("/api/v1/signatures/qa/").json()
    assert [v["number"] for v in body["versions"]] == [2, 1]
    assert body["alias_details"][0]["name"] == "production"
    assert body["alias_details"][0]["version"] == 1
    missing = reader.get("/api/v1/signatures/nope/")
    assert missing.status_code == 404
    assert missing.json()["code"] == "signature_not_found"


def test_retrieve_signature_queries_do_not_grow_with_versions(reader, qa, qa_spec, make_user):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert reader.get("/api/v1/signatures/qa/").status_code == 200
        return len(captured)

    before = queries()
    author = make_user("author")
    for number in (3, 4, 5):
        spec = qa_spec | {"instructions": f"Revision {number}."}
        version = signature_version_create(signature=qa, spec=spec, author=author).version
        alias_set(signature=qa, name=f"stage{number}", version=version, user=author)
    assert queries() == before


@pytest.mark.parametrize(
    ("url", "status_code"),
    [
        ("/api/v1/signatures/%00/", 404),
        ("/api/v1/signatures/qa/resolve/?ref=%00", 400),
        ("/api/v1/signatures/qa/aliases/%00/", 404),
        ("/api/v1/signatures/?search=%00", 400),
        ("/api/v1/signatures/?tag=%00", 400),
        ("/api/v1/signatures/?alias=a%00", 400),
    ],
)
def test_null_characters_are_refused_not_sent_to_the_database(reader, qa, url, status_code):
    assert reader.get(url).status_code == status_code


def test_null_characters_in_writes_are_field_errors(editor, qa, qa_spec):
    signature = editor.post(
        "/api/v1/signatures/", {"name": "nul", "description": "a\x00b"}, format="json"
    )
    api_error(signature, 400)
    assert "NUL" in error_messages(signature, "description")[0]
    version = editor.post(
        "/api/v1/signatures/qa/versions/", qa_spec | {"changelog": "\x00"}, format="json"
    )
    api_error(version, 400)
    assert "NUL" in error_messages(version, "changelog")[0]
    patch = editor.patch("/api/v1/signatures/qa/", {"tags": ["a\x00"]}, format="json")
    assert patch.status_code == 400


def test_removing_an_alias_with_a_null_character_is_not_found(editor, qa):
    response = editor.delete("/api/v1/signatures/qa/aliases/%00/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_retrieve_versions(reader, qa):
    versions = reader.get("/api/v1/signatures/qa/versions/").json()
    assert [v["number"] for v in versions["results"]] == [2, 1]
    one = reader.get("/api/v1/signatures/qa/versions/1/").json()
    assert one["signature"] == "qa"
    assert one["aliases"] == ["production"]
    assert one["input_fields"][0]["name"] == "question"
    assert len(one["content_hash"]) == 64
    missing = reader.get("/api/v1/signatures/qa/versions/9/")
    assert (missing.status_code, missing.json()["code"]) == (404, "version_not_found")


def test_resolve(reader, qa):
    assert reader.get("/api/v1/signatures/qa/resolve/").json()["number"] == 1
    assert reader.get("/api/v1/signatures/qa/resolve/?ref=latest").json()["number"] == 2
    assert reader.get("/api/v1/signatures/qa/resolve/?ref=2").json()["number"] == 2
    missing = reader.get("/api/v1/signatures/qa/resolve/?ref=staging")
    assert (missing.status_code, missing.json()["code"]) == (404, "alias_not_found")


def test_api_key_clients_read_but_never_write(api_client, qa, qa_spec):
    assert api_client.get("/api/v1/signatures/qa/").status_code == 200
    response = api_client.post("/api/v1/signatures/qa/versions/", qa_spec, format="json")
    assert response.status_code == 403


def test_writes_need_the_model_permission(reader, qa, qa_spec):
    assert reader.post("/api/v1/signatures/", {"name": "x"}, format="json").status_code == 403
    assert reader.post("/api/v1/signatures/qa/versions/", qa_spec, format="json").status_code == 403
    assert (
        reader.put(
            "/api/v1/signatures/qa/aliases/production/", {"version": 2}, format="json"
        ).status_code
        == 403
    )
    assert reader.patch("/api/v1/signatures/qa/", {"tags": ["x"]}, format="json").status_code == 403


def test_create_signature_with_first_version(editor, qa_spec):
    payload = {
        "name": "ticket_priority",
        "description": "Priority of a ticket.",
        "tags": ["Support"],
        "version": qa_spec | {"changelog": "First."},
    }
    response = editor.post("/api/v1/signatures/", payload, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["tags"] == ["support"]
    assert body["versions"][0]["number"] == 1
    assert body["versions"][0]["author"] == "editor"
    assert body["versions"][0]["changelog"] == "First."
    duplicate = editor.post("/api/v1/signatures/", payload, format="json")
    assert api_error(duplicate, 409)["code"] == "signature_exists"
    assert "exists already" in error_messages(duplicate, "name")[0]


def test_create_signature_is_atomic_on_a_bad_version(editor, qa_spec):
    qa_spec["input_fields"][0]["name"] = "class"
    response = editor.post(
        "/api/v1/signatures/", {"name": "broken", "version": qa_spec}, format="json"
    )
    api_error(response, 400)
    assert "Python keyword" in error_messages(response, "version", "input_fields", 0, "name")[0]
    assert not Signature.objects.filter(name="broken").exists()


def test_create_signature_bad_name(editor):
    response = editor.post("/api/v1/signatures/", {"name": "Bad Name"}, format="json")
    api_error(response, 400)
    assert "lowercase" in error_messages(response, "name")[0]


def test_add_version_and_identical_add(editor, qa, qa_spec):
    response = editor.post("/api/v1/signatures/qa/versions/", qa_spec, format="json")
    assert response.status_code == 201
    assert (response.json()["number"], response.json()["created"]) == (3, True)
    again = editor.post("/api/v1/signatures/qa/versions/", qa_spec, format="json")
    assert again.status_code == 200
    assert (again.json()["number"], again.json()["created"]) == (3, False)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda s: s["input_fields"][0].update(name="2x"), ("input_fields", 0, "name")),
        (lambda s: s["output_fields"][0].update(name="question"), ("output_fields", 0, "name")),
        (lambda s: s["output_fields"][0].update(name="signature"), ("output_fields", 0, "name")),
        (lambda s: s["output_fields"][0].update(type="list[int]"), ("output_fields", 0, "type")),
        (
            lambda s: s["output_fields"][0].update(type="literal", choices=[]),
            ("output_fields", 0, "choices"),
        ),
        (lambda s: s.update(module_kind="ReAct"), ("module_kind",)),
        (lambda s: s.update(instructions=""), ("instructions",)),
        (lambda s: s.update(lm_defaults={"temperature": 9}), ("lm_defaults", "temperature")),
    ],
)
def test_invalid_specs_get_field_level_400(editor, qa, qa_spec, mutate, path):
    spec = copy.deepcopy(qa_spec)
    mutate(spec)
    response = editor.post("/api/v1/signatures/qa/versions/", spec, format="json")
    assert api_error(response, 400)["code"] == "invalid_spec"
    messages = error_messages(response, *path)
    assert messages and all(isinstance(message, str) and message for message in messages)
    assert qa.versions.count() == 2


def test_patch_signature_documentation_only(editor, qa):
    response = editor.patch(
        "/api/v1/signatures/qa/", {"description": "Docs.", "tags": ["a"]}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["description"], response.json()["tags"]) == ("Docs.", ["a"])
    refused = editor.patch("/api/v1/signatures/qa/", {"name": "renamed"}, format="json")
    api_error(refused, 400)
    assert error_messages(refused, "name")


def test_move_alias(editor, qa):
    response = editor.put(
        "/api/v1/signatures/qa/aliases/production/", {"version": 2}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.json()["updated_by"] == "editor"
    assert signature_version_resolve(name="qa").number == 2
    change = AliasChange.objects.latest("id")
    assert (change.from_version.number, change.to_version.number) == (1, 2)
    created = editor.put("/api/v1/signatures/qa/aliases/staging/", {"version": 1}, format="json")
    assert created.status_code == 200
    listed = editor.get("/api/v1/signatures/qa/aliases/").json()
    assert [(a["name"], a["version"]) for a in listed] == [("production", 2), ("staging", 1)]
    assert editor.get("/api/v1/signatures/qa/aliases/staging/").json()["version"] == 1


def test_move_alias_with_precondition(editor, qa):
    stale = editor.put(
        "/api/v1/signatures/qa/aliases/production/",
        {"version": 2, "expected_version": 2},
        format="json",
    )
    assert stale.status_code == 409
    assert stale.json()["code"] == "alias_conflict"
    fresh = editor.put(
        "/api/v1/signatures/qa/aliases/production/",
        {"version": 2, "expected_version": 1},
        format="json",
    )
    assert fresh.status_code == 200
    new_only = editor.put(
        "/api/v1/signatures/qa/aliases/staging/",
        {"version": 2, "expected_version": None},
        format="json",
    )
    assert new_only.status_code == 200


def test_alias_errors(editor, qa):
    latest = editor.put("/api/v1/signatures/qa/aliases/latest/", {"version": 1}, format="json")
    api_error(latest, 400)
    assert "implicit" in error_messages(latest, "name")[0]
    missing = editor.put("/api/v1/signatures/qa/aliases/production/", {"version": 7}, format="json")
    assert (missing.status_code, missing.json()["code"]) == (404, "version_not_found")
    bad = editor.put("/api/v1/signatures/qa/aliases/production/", {}, format="json")
    assert error_messages(bad, "version") and api_error(bad, 400)


def test_delete_alias(editor, qa):
    assert editor.delete("/api/v1/signatures/qa/aliases/production/").status_code == 204
    assert editor.delete("/api/v1/signatures/qa/aliases/production/").status_code == 404
    assert signature_version_resolve(name="qa").number == 2


def test_schema_documents_the_registry(reader):
    response = reader.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/signatures/",
        "/api/v1/signatures/{name}/",
        "/api/v1/signatures/{name}/versions/",
        "/api/v1/signatures/{name}/versions/{number}/",
        "/api/v1/signatures/{name}/resolve/",
        "/api/v1/signatures/{name}/aliases/",
        "/api/v1/signatures/{name}/aliases/{alias}/",
    ):
        assert path in paths
    assert "put" in paths["/api/v1/signatures/{name}/aliases/{alias}/"]
    components = response.json()["components"]["schemas"]
    assert "FieldSpec" in components or "FieldSpecRequest" in components
