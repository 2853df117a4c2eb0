"""Reading executions at scale: the API list pages by cursor (no count, no offset), its
filters are served by the list's indexes, and the admin list never counts or scans the whole
table."""

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import signing
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from core.api.pagination import MAX_PAGE_SIZE, KeysetPagination
from executions import admin as executions_admin
from executions.filters import ExecutionFilter
from executions.models import Execution
from executions.selectors import execution_list
from tests.support.errors import api_error
from tests.support.factories import APIKeyFactory, ProviderFactory, SignatureVersionFactory
from tests.support.specs import QA_SPEC

LIST = "/api/v1/executions"
NOW = timezone.now()


def _executions(
    count: int,
    *,
    version,
    provider,
    api_key=None,
    status="queued",
    at=NOW,
    same_time=False,
    **fields,
):
    """`count` executions queued one second apart, newest first from `at` (all at `at` with
    `same_time`), written in one statement."""
    finished = {} if status in ("queued", "running") else {"finished_at": at}
    heartbeat = {"heartbeat_at": at} if status == "running" else {}
    return Execution.objects.bulk_create(
        Execution(
            signature_version=version,
            requested_provider=provider,
            api_key=api_key,
            status=status,
            queued_at=at if same_time else at - timedelta(seconds=index),
            inputs={"question": "q"},
            **finished,
            **heartbeat,
            **fields,
        )
        for index in range(count)
    )


def _newest_first(executions) -> list[str]:
    return [str(e.id) for e in sorted(executions, key=lambda e: (e.queued_at, e.id), reverse=True)]


def _walk(client, first: str, params=None) -> tuple[list[str], list[dict]]:
    """Every row's id in the order the pages gave them, following `next`, and the pages."""
    ids, pages = [], []
    response = client.get(first, params)
    while True:
        assert response.status_code == 200, response.content[:500]
        page = response.json()
        pages.append(page)
        ids += [row["id"] for row in page["results"]]
        if page["next"] is None:
            return ids, pages
        response = client.get(page["next"])


@pytest.fixture
def version(db):
    return SignatureVersionFactory(signature__name="qa", spec=QA_SPEC)


@pytest.fixture
def provider(db):
    return ProviderFactory(name="echo")


# Pages --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_give_every_execution_once_newest_first_ties_included(
    api_client, api_key, version, provider
):
    # Eight queued in the same microsecond: only the id tells them apart, so a cursor that
    # kept the time alone would skip or repeat some of them.
    executions = _executions(7, version=version, provider=provider, api_key=api_key)
    executions += _executions(
        8, version=version, provider=provider, api_key=api_key, same_time=True, at=NOW
    )
    ids, pages = _walk(api_client, LIST, {"page_size": 2})
    assert ids == _newest_first(executions)
    assert [len(page["results"]) for page in pages] == [2] * 7 + [1]
    assert all(set(page) == {"next", "previous", "results"} for page in pages)
    assert pages[0]["previous"] is None and pages[-1]["next"] is None


@pytest.mark.django_db
def test_previous_leads_back_to_the_page_before(api_client, api_key, version, provider):
    _executions(5, version=version, provider=provider, api_key=api_key)
    first = api_client.get(LIST, {"page_size": 2}).json()
    second = api_client.get(first["next"]).json()
    third = api_client.get(second["next"]).json()
    back = api_client.get(third["previous"]).json()
    assert back["results"] == second["results"]
    assert api_client.get(back["previous"]).json()["results"] == first["results"]
    assert api_client.get(back["previous"]).json()["previous"] is None
    assert api_client.get(back["next"]).json()["results"] == third["results"]


@pytest.mark.django_db
def test_executions_created_while_paging_neither_shift_nor_repeat_the_pages(
    api_client, api_key, version, provider
):
    older = _executions(6, version=version, provider=provider, api_key=api_key)
    first = api_client.get(LIST, {"page_size": 3}).json()
    _executions(4, version=version, provider=provider, api_key=api_key, at=NOW + timedelta(hours=1))
    rest, _ = _walk(api_client, first["next"])
    assert [row["id"] for row in first["results"]] + rest == _newest_first(older)


@pytest.mark.django_db
def test_the_next_link_keeps_the_filters_and_the_page_size(api_client, api_key, version, provider):
    other = SignatureVersionFactory(signature__name="other", spec=QA_SPEC)
    failed = _executions(5, version=version, provider=provider, api_key=api_key, status="failed")
    _executions(5, version=version, provider=provider, api_key=api_key, status="succeeded")
    _executions(5, version=other, provider=provider, api_key=api_key, status="failed")
    ids, pages = _walk(api_client, LIST, {"status": "failed", "signature": "qa", "limit": 2})
    assert ids == _newest_first(failed)
    assert [len(page["results"]) for page in pages] == [2, 2, 1]


@pytest.mark.django_db
def test_an_api_key_pages_through_its_own_executions_only(api_client, api_key, version, provider):
    own = _executions(3, version=version, provider=provider, api_key=api_key)
    _executions(3, version=version, provider=provider, api_key=APIKeyFactory(name="other"))
    _executions(3, version=version, provider=provider)
    assert _walk(api_client, LIST, {"page_size": 1})[0] == _newest_first(own)


# Page size ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_page_size_defaults_to_the_setting(api_client, api_key, version, provider, settings):
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"PAGE_SIZE": 3}
    _executions(4, version=version, provider=provider, api_key=api_key)
    page = api_client.get(LIST).json()
    assert len(page["results"]) == 3 and page["next"]


@pytest.mark.django_db
def test_page_size_wins_over_its_alias_limit(api_client, api_key, version, provider):
    _executions(4, version=version, provider=provider, api_key=api_key)
    assert len(api_client.get(LIST, {"limit": 1}).json()["results"]) == 1
    assert len(api_client.get(LIST, {"page_size": 3, "limit": 1}).json()["results"]) == 3


@pytest.mark.django_db
def test_a_page_size_above_the_maximum_gives_the_maximum(api_client, api_key, version, provider):
    _executions(MAX_PAGE_SIZE + 1, version=version, provider=provider, api_key=api_key)
    page = api_client.get(LIST, {"page_size": MAX_PAGE_SIZE * 10}).json()
    assert len(page["results"]) == MAX_PAGE_SIZE and page["next"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["page_size", "limit"])
@pytest.mark.parametrize("value", ["0", "-1", "ten", "1.5", ""])
def test_a_page_size_that_is_not_a_whole_number_from_1_is_a_400(api_client, name, value):
    body = api_error(api_client.get(LIST, {name: value}), 400)
    assert body["code"] == "invalid_request"
    assert list(body["errors"]) == [name]


@pytest.mark.django_db
@pytest.mark.parametrize("offset", ["0", "50", "x"])
def test_an_offset_is_refused_rather_than_ignored(api_client, offset):
    # Ignored, it would serve a client counting offsets its first page forever.
    body = api_error(api_client.get(LIST, {"offset": offset}), 400)
    assert body["errors"]["offset"][0]["code"] == "offset_unsupported"


# Cursors ------------------------------------------------------------------------------------


def _signed(payload) -> str:
    return signing.Signer(salt=KeysetPagination.signing_salt).sign_object(payload)


@pytest.mark.django_db
def test_a_cursor_the_server_did_not_write_is_a_400(api_client, api_key, version, provider):
    _executions(3, version=version, provider=provider, api_key=api_key)
    link = api_client.get(LIST, {"page_size": 1}).json()["next"]
    cursor = parse_qs(urlsplit(link).query)["cursor"][0]
    real = signing.Signer(salt=KeysetPagination.signing_salt).unsign_object(cursor)
    execution_id = real["p"][1]
    forged = [
        "garbage",
        "",
        cursor[:-2],
        cursor[:-1] + ("A" if cursor[-1] != "A" else "B"),
        # The payload in the clear, as a client might build it.
        signing.b64_encode(json.dumps(real).encode()).decode(),
        # Signed with another salt (another part of the service signs with the same key).
        signing.Signer().sign_object(real),
        # Signed here, yet no position of this list's order.
        _signed({"p": [real["p"][0]], "b": False}),
        _signed({"p": ["yesterday", execution_id], "b": False}),
        _signed({"p": [real["p"][0], "not-a-uuid"], "b": False}),
        _signed({"p": real["p"], "b": "yes"}),
        _signed({"p": None, "b": False}),
        _signed(["a", "list"]),
        _signed("a string"),
    ]
    for value in forged:
        body = api_error(api_client.get(LIST, {"cursor": value}), 400)
        assert body["errors"]["cursor"][0]["code"] == "invalid_cursor", value


@pytest.mark.django_db
def test_a_cursor_keeps_microseconds(api_client, api_key, version, provider):
    # JSON encoders of Django and DRF cut datetimes to milliseconds: a cursor written with
    # them would place rows a fraction of a millisecond apart on the wrong side.
    base = NOW.replace(microsecond=0)
    executions = [
        *_executions(1, version=version, provider=provider, api_key=api_key, at=base),
        *_executions(
            1, version=version, provider=provider, api_key=api_key, at=base.replace(microsecond=1)
        ),
        *_executions(
            1, version=version, provider=provider, api_key=api_key, at=base.replace(microsecond=2)
        ),
    ]
    assert _walk(api_client, LIST, {"page_size": 1})[0] == _newest_first(executions)


# The schema ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_schema_documents_the_cursor_pages(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"][LIST]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert {"cursor", "page_size", "limit"} <= set(parameters)
    assert "offset" not in parameters
    assert parameters["page_size"]["schema"] == {"type": "integer", "minimum": 1}
    page = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][page.rsplit("/", 1)[1]]
    assert set(body["properties"]) == {"next", "previous", "results"}


# The indexes --------------------------------------------------------------------------------


def _plan(queryset) -> str:
    """The plan PostgreSQL would choose if the table were large: sequential scans, bitmap
    scans (which lose the order) and sorts made as costly as they become at scale."""
    sql, params = queryset.query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        for option in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            cursor.execute(f"SET LOCAL {option} = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("scope", "filters", "index"),
    [
        ("api key", {}, "execution_list_api_key"),
        ("api key", {"status": ["failed"]}, "execution_list_"),
        ("api key", {"signature": "qa"}, "execution_list_"),
        ("staff", {"status": ["failed"]}, "execution_list_status"),
        ("staff", {"signature": "qa"}, "execution_list_signature"),
        ("staff", {"status": ["failed"], "signature": "qa"}, "execution_list_"),
        ("staff", {}, "executions_execution_queued_at"),
    ],
)
def test_each_common_filter_reads_an_index_in_the_lists_order(
    api_key, version, provider, scope, filters, index
):
    _executions(20, version=version, provider=provider, api_key=api_key, status="failed")
    queryset = execution_list(api_key=api_key if scope == "api key" else None)
    page = ExecutionFilter(filters, queryset=queryset).qs
    # A page after a cursor, as the API reads it.
    paginator = KeysetPagination()
    fields = paginator._ordering_fields(page)
    position = [NOW, Execution.objects.order_by("id").first().id]
    plan = _plan(page.filter(paginator._after(fields, position, backwards=False))[:51])
    execution_scan = [line for line in plan.splitlines() if "on executions_execution" in line]
    assert execution_scan and index in execution_scan[0], plan
    # No sort of the matching rows; an incremental sort of rows sharing a `queued_at` (read
    # in order from that column's own index) costs only the ties.
    full_sorts = [line for line in plan.splitlines() if "Sort  (" in line]
    assert all("Incremental Sort" in line for line in full_sorts), plan
    assert "Unique" not in plan, plan


# The admin list -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_list_counts_no_further_than_its_bound(
    admin_client, version, provider, monkeypatch
):
    # A bound and a page small enough for a few rows to pass them (10,000 and 100 as shipped).
    monkeypatch.setattr(executions_admin, "CHANGELIST_COUNT_MAX", 3)
    monkeypatch.setattr(executions_admin.ExecutionAdmin, "list_per_page", 2)
    executions = _executions(5, version=version, provider=provider, status="failed")
    url = reverse("admin:executions_execution_changelist")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(
            url,
            {"status__exact": "failed", "signature_version__signature__id__exact": version.id},
        )
    assert response.status_code == 200
    changelist = response.context["cl"]
    assert (changelist.result_count, changelist.full_result_count) == (3, None)
    assert [row.id for row in changelist.result_list] == [e.id for e in executions[:2]]
    assert "More than 3 executions match" in response.content.decode()
    reads = [q["sql"] for q in queries.captured_queries if '"executions_execution"' in q["sql"]]
    counts = [sql for sql in reads if "COUNT(" in sql]
    assert len(counts) == 1, counts
    # Counted up to the bound, without a join to find the signature's executions.
    assert "LIMIT 4" in counts[0] and "JOIN" not in counts[0], counts[0]
    # No read of every execution: each is cut at a page or a bound, none is a DISTINCT.
    for sql in reads:
        assert "LIMIT" in sql and "DISTINCT" not in sql, sql


@pytest.mark.django_db
def test_the_admin_list_filters_by_signature_and_error_code(admin_client, version, provider):
    other = SignatureVersionFactory(signature__name="other", spec=QA_SPEC)
    later = SignatureVersionFactory(
        signature=version.signature, spec=QA_SPEC | {"instructions": "Answer briefly."}
    )
    ours = _executions(2, version=version, provider=provider, status="failed", error_code="boom")
    ours += _executions(1, version=later, provider=provider, status="failed", error_code="bang")
    _executions(2, version=other, provider=provider, status="failed", error_code="boom")
    url = reverse("admin:executions_execution_changelist")
    response = admin_client.get(
        url, {"signature_version__signature__id__exact": version.signature_id}
    )
    assert {row.id for row in response.context["cl"].result_list} == {e.id for e in ours}
    page = response.content.decode()
    assert "error_code=bang" in page and "error_code=boom" in page
    response = admin_client.get(url, {"error_code": "bang"})
    assert [row.id for row in response.context["cl"].result_list] == [ours[2].id]
    # A signature id that is no number is the admin's own "invalid lookup" page, not a 500.
    response = admin_client.get(url, {"signature_version__signature__id__exact": "x"})
    assert response.status_code == 302 and "e=1" in response["Location"]


@pytest.mark.django_db
def test_a_re_run_from_the_admin_list_copies_the_whole_execution(admin_client, version, provider):
    """The list defers the inputs it does not show; the re-run action reads them whole."""
    original = _executions(1, version=version, provider=provider, status="failed")[0]
    Execution.objects.filter(id=original.id).update(inputs={"question": "kept"})
    url = reverse("admin:executions_execution_changelist")
    response = admin_client.post(
        url, {"action": "rerun_same", "_selected_action": [str(original.id)]}, follow=True
    )
    assert response.status_code == 200
    rerun = Execution.objects.get(rerun_of=original)
    assert rerun.inputs == {"question": "kept"}
