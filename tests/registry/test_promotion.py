"""Promotion (registry.services.promotion): an alias moves only to a version that scores
strictly better on the same data and metric, or by an editor's force; every promotion is a
Promotion row with both scores, and the move an AliasChange. Through the service, the API
(`POST /api/v1/signatures/<name>/aliases/<alias>/promote/`) and `registry_promote`."""

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from registry.exceptions import VersionNotFound
from registry.models import AliasChange, Dataset, Promotion
from registry.services.aliases import alias_set
from registry.services.promotion import (
    AlreadyPromoted,
    ForceNotAllowed,
    NotBetter,
    ScoreMissing,
    version_promote,
)
from registry.services.scores import version_score_record

pytestmark = pytest.mark.django_db

HASH = "a" * 64
PROMOTE_PERMS = ("add_promotion", "add_alias", "change_alias")


@pytest.fixture
def qa(make_signature):
    """`qa` with versions 1 and 2, `production` at version 1."""
    signature = make_signature("qa", versions=2)
    alias_set(signature=signature, name="production", version=signature.versions.get(number=1))
    return signature


@pytest.fixture
def dataset(qa) -> Dataset:
    return Dataset.objects.create(signature=qa, name="starter", content_hash=HASH)


def score(signature, number: int, value: float, **overrides) -> None:
    arguments = {
        "version": signature.versions.get(number=number),
        "dataset": None,
        "dataset_hash": HASH,
        "split": "dev",
        "metric": "exact_match",
        "score": value,
        "examples": 40,
        "source": "evaluation",
    } | overrides
    version_score_record(**arguments)


def promote(signature, number: int, **overrides) -> Promotion:
    arguments = {
        "signature": signature,
        "version": signature.versions.get(number=number),
        "dataset_hash": HASH,
        "split": "dev",
        "metric": "exact_match",
    } | overrides
    return version_promote(**arguments)


def production(signature) -> int:
    return signature.aliases.get(name="production").version.number


def test_a_better_score_moves_the_alias_and_records_both(qa, make_user):
    score(qa, 1, 0.40)
    score(qa, 2, 0.72)
    user = make_user("operator")
    promotion = promote(qa, 2, reason="dev score rose", user=user)
    assert production(qa) == 2
    assert (promotion.from_version.number, promotion.to_version.number) == (1, 2)
    assert (promotion.from_score, promotion.to_score) == (0.40, 0.72)
    assert (promotion.dataset_hash, promotion.split, promotion.metric) == (
        HASH,
        "dev",
        "exact_match",
    )
    assert not promotion.forced
    assert promotion.reason == "dev score rose"
    assert promotion.promoted_by == user
    change = AliasChange.objects.filter(alias_name="production").latest("id")
    assert (change.from_version.number, change.to_version.number) == (1, 2)


def test_the_newest_score_on_exactly_that_data_counts(qa):
    score(qa, 1, 0.50)
    score(qa, 2, 0.90)
    score(qa, 2, 0.45)  # measured again since: worse
    score(qa, 2, 0.99, dataset_hash="b" * 64)  # other data
    score(qa, 2, 0.99, metric="token_f1")  # another metric
    with pytest.raises(NotBetter) as caught:
        promote(qa, 2)
    assert "0.450" in caught.value.message and "0.500" in caught.value.message
    assert production(qa) == 1


def test_an_equal_score_is_not_better(qa):
    score(qa, 1, 0.5)
    score(qa, 2, 0.5)
    with pytest.raises(NotBetter) as caught:
        promote(qa, 2)
    assert caught.value.status_code == 409
    assert caught.value.code == "not_better"
    assert not Promotion.objects.exists()


def test_missing_scores_are_named(qa):
    with pytest.raises(ScoreMissing) as caught:
        promote(qa, 2)
    assert "Version 2 has no score" in caught.value.message
    score(qa, 2, 0.8)
    with pytest.raises(ScoreMissing) as caught:
        promote(qa, 2)
    assert "Version 1 ('production' now) has no score" in caught.value.message
    assert "0.800" in caught.value.message
    assert production(qa) == 1


def test_a_new_alias_needs_only_the_candidates_score(qa):
    score(qa, 2, 0.6)
    promotion = promote(qa, 2, alias="staging")
    assert promotion.from_version is None and promotion.from_score is None
    assert qa.aliases.get(name="staging").version.number == 2


def test_an_editor_may_force_and_it_is_recorded(qa, make_user):
    score(qa, 1, 0.9)
    score(qa, 2, 0.1)
    editor = make_user("editor", perms=("change_signature",))
    promotion = promote(qa, 2, force=True, reason="the old one leaks", user=editor)
    assert promotion.forced
    assert (promotion.from_score, promotion.to_score) == (0.9, 0.1)
    assert production(qa) == 2


def test_force_without_scores_and_by_a_non_editor(qa, make_user):
    with pytest.raises(ForceNotAllowed):
        promote(qa, 2, force=True, user=make_user("reader"))
    promotion = promote(qa, 2, force=True)  # a command at the shell
    assert promotion.forced and promotion.to_score is None


def test_the_version_already_there_and_another_signatures_version(qa, make_signature):
    with pytest.raises(AlreadyPromoted):
        promote(qa, 1, force=True)
    other = make_signature("other")
    with pytest.raises(VersionNotFound):
        version_promote(
            signature=qa,
            version=other.versions.get(number=1),
            dataset_hash=HASH,
            split="dev",
            metric="exact_match",
        )


# API ------------------------------------------------------------------------------------------

URL = "/api/v1/signatures/qa/aliases/production/promote/"
BODY = {"version": 2, "dataset": "starter", "split": "dev", "metric": "exact_match"}


def _client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_api_promotes_on_the_datasets_current_hash(qa, dataset, make_user):
    score(qa, 1, 0.4)
    score(qa, 2, 0.7)
    client = _client(make_user("operator", perms=PROMOTE_PERMS, is_staff=True))
    response = client.post(URL, BODY | {"reason": "better"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["from_version"] == 1 and body["to_version"] == 2
    assert (body["from_score"], body["to_score"], body["forced"]) == (0.4, 0.7, False)
    assert body["promoted_by"] == "operator"
    assert production(qa) == 2


def test_api_refusals_come_in_the_error_shape(qa, dataset, make_user, api_client):
    score(qa, 1, 0.8)
    score(qa, 2, 0.7)
    client = _client(make_user("operator", perms=PROMOTE_PERMS, is_staff=True))
    refused = client.post(URL, BODY, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "not_better"
    assert "0.700" in refused.json()["message"] and "0.800" in refused.json()["message"]
    forced = client.post(URL, BODY | {"force": True}, format="json")
    assert forced.status_code == 403 and forced.json()["code"] == "force_not_allowed"
    assert client.post(URL, BODY | {"dataset": "nope"}, format="json").status_code == 404
    assert client.post(URL, BODY | {"version": 9}, format="json").status_code == 404
    bad = client.post(URL, {"version": "two", "split": "x"}, format="json")
    assert bad.status_code == 400 and set(bad.json()["errors"]) >= {"version", "split"}
    # An API key only reads the registry.
    assert api_client.post(URL, BODY, format="json").status_code == 403
    assert production(qa) == 1


# Command --------------------------------------------------------------------------------------


def test_command_promotes_and_refuses(qa, dataset):
    score(qa, 1, 0.8)
    score(qa, 2, 0.7)
    arguments = ["registry_promote", "qa", "2", "--dataset", "starter", "--metric", "exact_match"]
    with pytest.raises(CommandError, match="not better"):
        call_command(*arguments, stdout=io.StringIO())
    out = io.StringIO()
    call_command(*arguments, "--force", "--reason", "rollback test", stdout=out)
    assert "to version 2 (0.700) (forced)" in out.getvalue()
    assert production(qa) == 2
    assert Promotion.objects.get().reason == "rollback test"
    with pytest.raises(CommandError, match="no dataset"):
        call_command("registry_promote", "qa", "1", "--dataset", "x", "--metric", "m")
