"""The admin for datasets (upload, read-only pages, export, guarded delete), version scores and
the promotion log."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from evaluations.models import EvaluationRun
from registry.models import Dataset, DatasetExample, Promotion, VersionScore
from registry.services.datasets import dataset_import
from registry.services.scores import version_score_record
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db

IMPORT_URL = reverse("admin:registry_dataset_import")
JSONL = (
    '{"split": "dev", "question": "What is the capital of Italy?", "answer": "Rome", '
    '"accepted": {"answer": ["Roma"]}}\n'
    '{"question": "What is 2 + 2?", "answer": "4"}\n'
)


@pytest.fixture
def qa(make_signature):
    return make_signature("qa")


@pytest.fixture
def starter(qa):
    return dataset_import(signature=qa, name="starter", content=JSONL, source="facts.jsonl")


def _upload(client: Client, qa, content: bytes, filename: str = "facts.jsonl", **fields):
    data = {"signature": qa.pk, "name": "starter", "split": "train", "format": ""} | fields
    data["file"] = SimpleUploadedFile(filename, content)
    return client.post(IMPORT_URL, data)


def test_the_upload_page_imports_a_file(admin_client, qa):
    changelist = admin_client.get(reverse("admin:registry_dataset_changelist"))
    assert IMPORT_URL in changelist.content.decode()
    page = admin_client.get(IMPORT_URL)
    assert page.status_code == 200 and b'enctype="multipart/form-data"' in page.content
    response = _upload(admin_client, qa, JSONL.encode(), description="Facts.")
    dataset = Dataset.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:registry_dataset_change", args=[dataset.pk])
    assert (dataset.example_count, dataset.source) == (2, "upload: facts.jsonl")
    assert dataset.description == "Facts."
    followed = admin_client.get(response["Location"])
    assert "Imported 2 examples into qa/starter" in followed.content.decode()


def test_a_csv_upload_and_a_replace(admin_client, qa, starter):
    csv_text = b"question,answer\nq?,a\n"
    response = _upload(admin_client, qa, csv_text, "more.csv")
    assert response.status_code == 200
    assert "already has a dataset" in response.content.decode()
    response = _upload(admin_client, qa, csv_text, "more.csv", replace="on")
    assert response.status_code == 302
    dataset = Dataset.objects.get(pk=starter.pk)
    assert (dataset.example_count, dataset.source) == (1, "upload: more.csv")
    # The re-import link prefills the signature and the name.
    page = admin_client.get(IMPORT_URL, {"dataset": starter.pk})
    assert page.context["form"].initial == {"signature": qa.pk, "name": "starter", "replace": True}


def test_a_bad_file_shows_each_problem_and_imports_nothing(admin_client, qa):
    bad = JSONL + '{"question": 3, "answer": "x"}\n{"question": "q", "split": "holdout"}\n'
    response = _upload(admin_client, qa, bad.encode())
    content = response.content.decode()
    assert response.status_code == 200
    assert "Nothing was imported: 3 problem(s)." in content
    assert "row 3, question: Expected a string, got an integer." in content
    assert "row 4, answer: The field &#x27;answer&#x27; is required." in content
    assert "row 4, split" in content
    assert not Dataset.objects.exists()
    response = _upload(admin_client, qa, JSONL.encode(), "facts.txt")
    assert "neither .jsonl nor .csv" in response.content.decode()


def test_the_upload_needs_the_add_permission_and_replace_the_change_permission(
    make_user, qa, starter
):
    client = Client()
    client.force_login(make_user("viewer", perms=("view_dataset",), is_staff=True))
    assert client.get(IMPORT_URL).status_code == 403
    changelist = client.get(reverse("admin:registry_dataset_changelist"))
    assert changelist.status_code == 200 and IMPORT_URL not in changelist.content.decode()
    client.force_login(make_user("adder", perms=("view_dataset", "add_dataset"), is_staff=True))
    response = _upload(client, qa, JSONL.encode(), replace="on")
    assert "needs the change_dataset permission" in response.content.decode()
    assert _upload(client, qa, JSONL.encode(), name="second").status_code == 302


def test_the_dataset_page_is_read_only_with_bounded_examples_and_exports(admin_client, qa):
    rows = [{"question": f"q{n}?", "answer": str(n)} for n in range(150)]
    dataset = dataset_import(signature=qa, name="big", rows=rows)
    page = admin_client.get(reverse("admin:registry_dataset_change", args=[dataset.pk]))
    content = page.content.decode()
    assert page.status_code == 200
    assert "examples (the first 100, in file order; export for all)" in content.lower()
    assert "q99?" in content and "q100?" not in content
    assert 'name="_save"' not in content  # nothing to edit
    export = reverse("admin:registry_dataset_export", args=[dataset.pk])
    assert f"{export}?format=csv" in content
    response = admin_client.get(export, {"format": "csv"})
    assert response["Content-Disposition"] == 'attachment; filename="qa-big.csv"'
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0] == "split,question,answer" and len(lines) == 151
    assert admin_client.get(reverse("admin:registry_dataset_add")).status_code == 403
    listing = admin_client.get(reverse("admin:registry_dataset_changelist")).content.decode()
    assert "150 (train 150)" in listing and dataset.content_hash[:12] in listing
    signature_page = admin_client.get(reverse("admin:registry_signature_change", args=[qa.pk]))
    assert reverse("admin:registry_dataset_change", args=[dataset.pk]) in (
        signature_page.content.decode()
    )


def test_delete_counts_the_examples_and_is_refused_while_runs_use_it(admin_client, qa, starter):
    url = reverse("admin:registry_dataset_delete", args=[starter.pk])
    run = EvaluationRun.objects.create(
        signature_version=qa.versions.get(),
        split="dev",
        provider=ProviderFactory(),
        metric="exact_match",
        dataset=starter,
        dataset_hash=starter.content_hash,
    )
    page = admin_client.get(url)
    assert f"evaluation {run.pk}" in page.content.decode()
    admin_client.post(url, {"post": "yes"})
    assert Dataset.objects.filter(pk=starter.pk).exists()
    run.delete()
    page = admin_client.get(url)
    assert "qa/starter (2 examples)" in page.content.decode()
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Dataset.objects.exists() and not DatasetExample.objects.exists()


def test_a_versions_scores_show_on_its_page_and_in_the_score_log(admin_client, qa, starter):
    version = qa.versions.get()
    version_score_record(
        version=version,
        dataset=starter,
        dataset_hash=starter.content_hash,
        split="dev",
        metric="exact_match",
        score=0.74,
        examples=50,
        ci_low=0.61,
        ci_high=0.85,
        source=VersionScore.Source.LIBRARY,
        model="SmolLM2-135M-Instruct",
        reference="library: qa.compiled.json",
    )
    page = admin_client.get(reverse("admin:registry_signatureversion_change", args=[version.pk]))
    content = page.content.decode()
    assert "scores (newest first, latest 50)" in content.lower()
    for text in (
        "exact_match",
        "0.740 [0.610, 0.850]",
        "SmolLM2-135M-Instruct",
        "library: qa.compiled.json",
        reverse("admin:registry_dataset_change", args=[starter.pk]),
    ):
        assert text in content, text
    log = admin_client.get(reverse("admin:registry_versionscore_changelist"))
    assert "0.740 [0.610, 0.850]" in log.content.decode()
    assert admin_client.get(reverse("admin:registry_versionscore_add")).status_code == 403


def test_the_promotion_log_is_read_only(admin_client, make_signature):
    signature = make_signature("promoted", versions=2)
    first, second = signature.versions.order_by("number")
    promotion = Promotion.objects.create(
        signature=signature,
        alias_name="production",
        from_version=first,
        to_version=second,
        from_score=0.4,
        to_score=0.74,
        split="dev",
        metric="exact_match",
    )
    log = admin_client.get(reverse("admin:registry_promotion_changelist"))
    assert "0.400 → 0.740" in log.content.decode()
    page = admin_client.get(reverse("admin:registry_promotion_change", args=[promotion.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.get(reverse("admin:registry_promotion_add")).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:registry_promotion_delete", args=[promotion.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
