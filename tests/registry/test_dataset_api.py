"""The datasets API: imports as JSON (text or rows) or multipart uploads, all or nothing, in the
one error shape; reads for any client; writes by permission; downloads that import back."""

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from evaluations.models import EvaluationRun
from registry.models import Dataset, DatasetExample
from registry.services.datasets import dataset_import
from tests.support.errors import api_error, error_messages
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/signatures/qa/datasets/"
JSONL = (
    '{"split": "dev", "question": "What is the capital of Italy?", "answer": "Rome", '
    '"accepted": {"answer": ["Roma"]}}\n'
    '{"question": "What is 2 + 2?", "answer": "4"}\n'
)
IMPORT_PERMS = ("add_dataset", "change_dataset", "delete_dataset")


@pytest.fixture
def qa(make_signature):
    return make_signature("qa")


@pytest.fixture
def editor(make_user) -> APIClient:
    client = APIClient()
    client.force_login(make_user("editor", perms=IMPORT_PERMS, is_staff=True))
    return client


@pytest.fixture
def adder(make_user) -> APIClient:
    """May import new datasets, not replace or delete them."""
    client = APIClient()
    client.force_login(make_user("adder", perms=("add_dataset",), is_staff=True))
    return client


@pytest.fixture
def starter(qa):
    return dataset_import(signature=qa, name="starter", content=JSONL)


def test_import_jsonl_text_then_read_it(editor, qa, api_client):
    response = editor.post(URL, {"name": "starter", "content": JSONL, "description": "Facts."})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "starter" and body["signature"] == "qa"
    assert body["example_count"] == 2 and body["split_counts"] == {"train": 1, "dev": 1}
    assert body["created_by"] == "editor" and body["source"] == "api"
    assert body["content_hash"] == Dataset.objects.get().content_hash

    # Any authenticated client reads: an API key too.
    listing = api_client.get(URL).json()
    assert listing["count"] == 1 and listing["results"][0]["name"] == "starter"
    assert api_client.get(URL + "starter/").json() == body
    examples = api_client.get(URL + "starter/examples/").json()
    assert examples["count"] == 2
    assert examples["results"][0] == {
        "position": 1,
        "split": "dev",
        "inputs": {"question": "What is the capital of Italy?"},
        "outputs": {"answer": "Rome"},
        "accepted": {"answer": ["Roma"]},
    }
    train = api_client.get(URL + "starter/examples/", {"split": "train", "limit": 1}).json()
    assert [row["position"] for row in train["results"]] == [2]


def test_import_rows_and_csv_text(editor, qa):
    rows = [{"question": "q?", "answer": "a"}]
    response = editor.post(URL, {"name": "rows", "examples": rows, "split": "test"})
    assert response.status_code == 201 and response.json()["split_counts"] == {"test": 1}
    text = "question, answer , accepted.answer\nq?,a,b | c\n"
    response = editor.post(URL, {"name": "table", "format": "csv", "content": text})
    assert response.status_code == 201, response.content
    assert DatasetExample.objects.get(dataset__name="table").accepted == {"answer": ["b", "c"]}


def test_multipart_upload_takes_the_format_from_the_file_name(editor, qa):
    upload = SimpleUploadedFile("facts.csv", b"split,question,answer\ndev,q?,a\n", "text/csv")
    response = editor.post(URL, {"name": "upload", "file": upload}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["source"] == "upload: facts.csv"
    assert response.json()["split_counts"] == {"dev": 1}
    unnamed = SimpleUploadedFile("facts.txt", JSONL.encode())
    response = editor.post(URL, {"name": "other", "file": unnamed}, format="multipart")
    api_error(response, 400)
    assert error_messages(response, "format")
    unnamed = SimpleUploadedFile("facts.txt", JSONL.encode())
    response = editor.post(
        URL, {"name": "other", "file": unnamed, "format": "jsonl"}, format="multipart"
    )
    assert response.status_code == 201


def test_a_bad_row_is_a_400_naming_rows_and_fields_and_imports_nothing(editor, qa):
    content = JSONL + '{"question": 3, "answer": "x", "colour": "red"}\n{"question": "q"}\n'
    response = editor.post(URL, {"name": "starter", "content": content})
    body = api_error(response, 400)
    assert body["code"] == "invalid_dataset"
    assert body["errors"]["rows"]["3"]["question"][0]["code"] == "wrong_type"
    assert body["errors"]["rows"]["3"]["colour"][0]["code"] == "unknown_field"
    assert body["errors"]["rows"]["4"]["answer"][0]["code"] == "missing"
    assert "row 3, question" in body["message"]
    assert not Dataset.objects.exists() and not DatasetExample.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": JSONL}, "name"),
        ({"name": "Bad Name", "content": JSONL}, "name"),
        ({"name": "d"}, "content"),
        ({"name": "d", "content": JSONL, "examples": []}, "content"),
        ({"name": "d", "content": JSONL, "split": "holdout"}, "split"),
        ({"name": "d", "content": JSONL, "format": "xml"}, "format"),
        ({"name": "d", "examples": "rows"}, "examples"),
        ({"name": "d", "examples": [1]}, ("rows", "1", "non_field_errors")),
        ({"name": "d", "content": JSONL, "replace": "sometimes"}, "replace"),
        ({"name": "d", "content": JSONL, "exampels": []}, "exampels"),
        ({"name": "d", "content": JSONL, "version": "staging"}, "version"),
        ({"name": "d", "content": ""}, "content"),
    ],
)
def test_bad_options_are_field_errors(editor, qa, body, field):
    response = editor.post(URL, body)
    api_error(response, 400)
    assert error_messages(response, *(field if isinstance(field, tuple) else (field,)))
    assert not Dataset.objects.exists()


def test_bodies_methods_and_paths_in_the_one_shape(editor, qa, starter, settings):
    assert api_error(editor.post(URL, [1, 2]), 400)
    malformed = editor.post(URL, data="{not json", content_type="application/json")
    assert api_error(malformed, 400)["code"] == "parse_error"
    form = editor.post(URL, data="a=1", content_type="application/x-www-form-urlencoded")
    assert api_error(form, 415)["code"] == "unsupported_media_type"
    assert api_error(editor.put(URL, {}), 405)
    assert api_error(editor.post(URL + "starter/"), 405)
    assert api_error(editor.delete(URL + "starter/export/"), 405)
    settings.API_MAX_BODY_BYTES = 100
    too_big = editor.post(URL, {"name": "big", "content": JSONL})
    assert api_error(too_big, 413)["code"] == "payload_too_large"
    assert api_error(editor.get("/api/v1/signatures/nope/datasets/"), 404)["code"] == (
        "signature_not_found"
    )
    for path in ("missing/", "missing/examples/", "missing/export/", "Bad%20Name/"):
        assert api_error(editor.get(URL + path), 404)["code"] == "dataset_not_found"
    assert api_error(editor.get(URL + "starter/examples/", {"split": "holdout"}), 400)
    assert api_error(editor.get(URL + "starter/export/", {"format": "xml"}), 400)


def test_replace_needs_the_flag_and_the_change_permission(editor, adder, starter):
    rows = {"name": "starter", "examples": [{"question": "q?", "answer": "a"}]}
    body = api_error(adder.post(URL, rows), 409)
    assert body["code"] == "dataset_exists" and error_messages(adder.post(URL, rows), "name")
    assert api_error(adder.post(URL, rows | {"replace": True}), 403)
    response = editor.post(URL, rows | {"replace": True})
    assert response.status_code == 201
    assert response.json()["example_count"] == 1
    assert Dataset.objects.get().pk == starter.pk


def test_writes_need_permissions_reads_need_credentials(api_client, make_user, starter):
    assert APIClient().get(URL).status_code == 401
    # An API key reads but never writes.
    assert api_error(api_client.post(URL, {"name": "d", "content": JSONL}), 403)
    assert api_error(api_client.delete(URL + "starter/"), 403)
    staff = APIClient()
    staff.force_login(make_user("reader", is_staff=True))
    assert staff.get(URL + "starter/").status_code == 200
    assert api_error(staff.post(URL, {"name": "d", "content": JSONL}), 403)
    assert api_error(staff.delete(URL + "starter/"), 403)
    assert Dataset.objects.count() == 1


def test_delete_is_refused_while_a_run_uses_the_dataset(editor, qa, starter):
    run = EvaluationRun.objects.create(
        signature_version=qa.versions.get(),
        split="dev",
        provider=ProviderFactory(),
        metric="exact_match",
        dataset=starter,
        dataset_hash=starter.content_hash,
    )
    body = api_error(editor.delete(URL + "starter/"), 409)
    assert body["code"] == "dataset_in_use" and f"evaluation {run.pk}" in body["message"]
    run.delete()
    assert editor.delete(URL + "starter/").status_code == 204
    assert not Dataset.objects.exists() and not DatasetExample.objects.exists()


@pytest.mark.parametrize("file_format", ["jsonl", "csv"])
def test_export_downloads_a_file_that_imports_back(editor, api_client, starter, file_format):
    response = api_client.get(URL + "starter/export/", {"format": file_format})
    assert response.status_code == 200
    assert response["Content-Type"].startswith(
        {"jsonl": "application/x-ndjson", "csv": "text/csv"}[file_format]
    )
    assert response["Content-Disposition"] == f'attachment; filename="qa-starter.{file_format}"'
    text = b"".join(response.streaming_content).decode()
    if file_format == "csv":
        header, first, _ = csv.reader(io.StringIO(text))
        assert header == ["split", "question", "answer", "accepted.answer"]
        assert first == ["dev", "What is the capital of Italy?", "Rome", "Roma"]
    else:
        assert json.loads(text.splitlines()[1]) == {
            "split": "train",
            "question": "What is 2 + 2?",
            "answer": "4",
        }
    again = editor.post(URL, {"name": "again", "format": file_format, "content": text})
    assert again.json()["content_hash"] == starter.content_hash
    dev = api_client.get(URL + "starter/export/", {"split": "dev"})
    assert dev["Content-Disposition"] == 'attachment; filename="qa-starter-dev.jsonl"'
    assert len(b"".join(dev.streaming_content).splitlines()) == 1
