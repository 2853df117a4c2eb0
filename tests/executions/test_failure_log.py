"""The failure log: every failed provider call keeps its cause and evidence, each execution
names its root cause, and the admin reads them, all against real failures.

Upstreams are fake OpenAI-compatible servers on 127.0.0.1 (refused connections, HTTP 401, 429,
500, a stall past the timeout, answers that are not the signature's format, answers that echo
the key); breakers are opened through their service.
"""

import secrets
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone
from django.utils.timezone import localtime

from executions.models import Execution, ExecutionAttempt, ExecutionFailure, FailureCause
from executions.services.cancel import execution_cancel
from executions.services.create import execution_create
from executions.services.reaper import execution_reap_stale
from executions.services.runs import execution_claim
from executions.signals import execution_finished
from providers import breakers
from providers.calls import TRACE_TEXT_MAX_CHARS
from tests.support.factories import CLOSED_PORT_URL, ProviderFactory, SignatureVersionFactory
from tests.support.specs import QA_LEVEL_INPUTS, QA_SPEC

KEY_ENV = "DSPY_TOOLKIT_PROVIDER_KEY_FAILURE_LOG"
# Not an answer in the ChatAdapter's format, nor JSON: both the adapter and its JSON retry fail.
GARBAGE = "I would say it is probably Paris, or maybe Lyon."


@pytest.fixture
def planted(monkeypatch) -> str:
    key = f"planted{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_ENV, key)
    return key


@pytest.fixture
def run(qa_version, django_capture_on_commit_callbacks):
    """`run(provider_name)`: create and run an execution (inline, as the test settings run
    django-q2 tasks), and return it reloaded."""

    def run_on(provider: str) -> Execution:
        with django_capture_on_commit_callbacks(execute=True):
            execution = execution_create(
                signature="qa", inputs=QA_LEVEL_INPUTS, provider=provider
            ).execution
        execution.refresh_from_db()
        return execution

    return run_on


def _remote(name: str, server=None, **fields):
    return ProviderFactory(
        name=name,
        kind="openai",
        base_url=server.base_url if server else CLOSED_PORT_URL,
        **fields,
    )


def _only_attempt(execution: Execution) -> ExecutionAttempt:
    (attempt,) = execution.provider_attempts.all()
    return attempt


@pytest.mark.django_db
def test_a_transport_error_is_the_cause_and_the_prompt_is_kept(run):
    _remote("unreachable", adapter="chat")
    execution = run("unreachable")
    attempt = _only_attempt(execution)
    assert (execution.status, execution.error_code, execution.error_cause) == (
        "failed",
        "providers_exhausted",
        "transport",
    )
    assert (attempt.cause, attempt.error_type, attempt.breaker_state) == (
        "transport",
        "LMTransportError",
        "closed",
    )
    # The messages were sent (or tried): the prompt quotes the inputs; nothing came back.
    assert "[system]" in attempt.prompt and "What is the capital of France?" in attempt.prompt
    assert attempt.raw_output == ""
    assert "LMTransportError" in attempt.traceback and "Traceback" in attempt.traceback


@pytest.mark.django_db
def test_a_parse_failure_keeps_the_raw_output_and_its_tokens(run, start_openai_server):
    server = start_openai_server(content=GARBAGE)
    _remote("rambling", server, adapter="chat")
    execution = run("rambling")
    attempt = _only_attempt(execution)
    assert (execution.error_cause, attempt.cause, attempt.error_type) == (
        "parse",
        "parse",
        "AdapterParseError",
    )
    # The chat adapter's answer and its JSON retry: two calls, both recorded with their tokens
    # (the fake upstream reports 7 prompt and 1 completion token a call).
    assert len(server.requests) == 2
    assert (attempt.input_tokens, attempt.output_tokens) == (14, 2)
    assert (execution.input_tokens, execution.output_tokens) == (14, 2)
    assert attempt.raw_output.count(GARBAGE) == 2
    assert "--- LM call 2 ---" in attempt.raw_output
    assert "[user]" in attempt.prompt


@pytest.mark.django_db
def test_an_open_breaker_is_the_cause_when_nothing_was_called(run):
    provider = ProviderFactory(name="tripped")
    breakers.breaker_force_open(provider=provider)
    execution = run("tripped")
    attempt = _only_attempt(execution)
    assert (execution.error_cause, attempt.outcome, attempt.cause, attempt.breaker_state) == (
        "breaker_open",
        "rejected",
        "breaker_open",
        "open",
    )
    assert attempt.prompt == attempt.raw_output == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "cause", "execution_status", "code"),
    [
        (429, "rate_limited", "failed", "providers_exhausted"),
        (401, "auth", "failed", "auth"),
        (500, "provider_error", "failed", "providers_exhausted"),
    ],
)
def test_upstream_statuses_have_their_cause_and_the_echoed_key_is_scrubbed(
    run, start_openai_server, planted, status, cause, execution_status, code
):
    server = start_openai_server(mode="echo", echo_status=status)
    _remote("echoing", server, api_key_env=KEY_ENV, adapter="chat")
    execution = run("echoing")
    attempt = _only_attempt(execution)
    assert (execution.status, execution.error_code, execution.error_cause) == (
        execution_status,
        code,
        cause,
    )
    assert attempt.cause == cause
    assert attempt.traceback
    for text in (attempt.prompt, attempt.raw_output, attempt.traceback, attempt.error_detail):
        if planted in text:
            pytest.fail("the planted key is in the failure log")


@pytest.mark.django_db
def test_an_answer_echoing_the_key_is_scrubbed_from_the_raw_output(
    run, start_openai_server, planted
):
    server = start_openai_server(mode="echo", echo_status=200, echo_body="completion")
    _remote("echo-answer", server, api_key_env=KEY_ENV, adapter="chat")
    attempt = _only_attempt(run("echo-answer"))
    assert attempt.cause == "parse"
    assert "[redacted]" in attempt.raw_output
    if planted in attempt.raw_output or planted in attempt.traceback:
        pytest.fail("the planted key is in the failure log")


@pytest.mark.django_db
def test_a_stall_past_the_timeout_is_a_timeout(run, start_openai_server):
    server = start_openai_server(mode="slow", delay_s=2.0)
    _remote("stalling", server, adapter="chat", timeout_s=0.3)
    execution = run("stalling")
    assert (execution.status, execution.error_code, execution.error_cause) == (
        "timed_out",
        "providers_timed_out",
        "timeout",
    )
    assert _only_attempt(execution).cause == "timeout"


@pytest.mark.django_db
def test_the_root_cause_of_a_chain_is_its_first_call_that_failed(run, start_openai_server):
    tripped = ProviderFactory(name="tripped")
    breakers.breaker_force_open(provider=tripped)
    rambling = _remote("rambling", start_openai_server(content=GARBAGE), adapter="chat")
    _remote("front", fallbacks=(tripped, rambling), adapter="chat")
    execution = run("front")
    assert [a.cause for a in execution.provider_attempts.order_by("position")] == [
        "transport",
        "breaker_open",
        "parse",
    ]
    assert (execution.error_code, execution.error_cause) == ("providers_exhausted", "transport")
    # The requested provider refused by its breaker: the first call made is the root cause.
    front = _remote("front-2", fallbacks=(rambling,), adapter="chat")
    breakers.breaker_force_open(provider=front)
    assert run("front-2").error_cause == "parse"


@pytest.mark.django_db
def test_cancelled_and_abandoned_executions_name_their_cause(
    qa_version, settings, clock, django_capture_on_commit_callbacks
):
    ProviderFactory(name="echo")
    with django_capture_on_commit_callbacks(execute=False):
        queued = execution_create(signature="qa", inputs=QA_LEVEL_INPUTS, provider="echo")
        abandoned = execution_create(signature="qa", inputs=QA_LEVEL_INPUTS, provider="echo")
    assert execution_cancel(execution=queued.execution).error_cause == "cancelled"
    settings.EXECUTIONS_MAX_RUN_ATTEMPTS = 1
    execution_claim(execution_id=abandoned.execution.id, now=clock)
    clock.advance(settings.EXECUTIONS_STALE_AFTER_S + 1)
    with django_capture_on_commit_callbacks(execute=True):
        execution_reap_stale(now=clock)
    abandoned.execution.refresh_from_db()
    assert abandoned.execution.error_cause == "worker_lost"


@pytest.mark.django_db
def test_the_finished_signal_carries_the_root_cause(run):
    seen = []

    def receiver(sender, outcome, **kwargs):
        seen.append(outcome)

    execution_finished.connect(receiver)
    try:
        _remote("unreachable", adapter="chat")
        run("unreachable")
    finally:
        execution_finished.disconnect(receiver)
    assert [(outcome.error_code, outcome.cause) for outcome in seen] == [
        ("providers_exhausted", "transport")
    ]


@pytest.mark.django_db
def test_long_texts_are_cut_and_say_so(run, start_openai_server):
    server = start_openai_server(content="x" * (TRACE_TEXT_MAX_CHARS + 500))
    _remote("verbose", server, adapter="chat")
    attempt = _only_attempt(run("verbose"))
    assert len(attempt.raw_output) < TRACE_TEXT_MAX_CHARS + 100
    assert attempt.raw_output.endswith("more characters not kept]")


@pytest.mark.django_db
def test_the_inputs_setting_off_keeps_no_prompt_and_the_log_shows_redacted(
    run, settings, admin_client
):
    settings.EXECUTIONS_FAILURE_LOG_INPUTS = False
    _remote("unreachable", adapter="chat")
    attempt = _only_attempt(run("unreachable"))
    assert attempt.prompt == ""
    page = admin_client.get(
        reverse("admin:executions_executionfailure_change", args=[attempt.pk])
    ).content.decode()
    assert "What is the capital of France?" not in page
    assert page.count("[redacted]") >= 2


@pytest.mark.django_db
def test_the_api_lists_executions_by_cause(run, staff_api_client):
    _remote("unreachable", adapter="chat")
    ProviderFactory(name="tripped")
    breakers.breaker_force_open(provider=ProviderFactory(name="tripped-2"))
    transport = run("unreachable")
    run("tripped-2")
    body = staff_api_client.get("/api/v1/executions", {"cause": "transport"}).json()
    assert [item["id"] for item in body["results"]] == [str(transport.id)]
    assert body["results"][0]["error"]["cause"] == "transport"
    detail = staff_api_client.get(f"/api/v1/executions/{transport.id}").json()
    assert detail["provider_attempts"][0]["cause"] == "transport"
    invalid = staff_api_client.get("/api/v1/executions", {"cause": "bogus"})
    assert invalid.status_code == 400
    assert set(invalid.json()) == {"code", "message", "errors"}


# The admin ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_failure_log_lists_failures_with_their_evidence(run, admin_client, start_openai_server):
    _remote("rambling", start_openai_server(content=GARBAGE), adapter="chat")
    ProviderFactory(name="echo")
    run("echo")
    execution = run("rambling")
    changelist = admin_client.get(reverse("admin:executions_executionfailure_changelist"))
    html = changelist.content.decode()
    assert changelist.status_code == 200
    # Only the failure is listed, with its time to the second, cause, code and colour.
    assert ExecutionFailure.objects.count() == 1
    failure = ExecutionFailure.objects.get()
    assert localtime(failure.started_at).strftime("%Y-%m-%d %H:%M:%S") in html
    assert "adapter_parse_error" in html and "Parse failure" in html
    assert "background:#c53030" in html
    detail = admin_client.get(
        reverse("admin:executions_executionfailure_change", args=[failure.pk])
    ).content.decode()
    assert "<pre" in detail and GARBAGE in detail
    assert "What is the capital of France?" in detail
    assert reverse("admin:executions_execution_change", args=[execution.pk]) in detail
    assert admin_client.get(reverse("admin:executions_executionfailure_add")).status_code == 403


@pytest.mark.django_db
def test_the_failure_log_filters_and_searches(run, admin_client, api_key):
    unreachable = _remote("unreachable", adapter="chat")
    breakers.breaker_force_open(provider=ProviderFactory(name="tripped"))
    transport = run("unreachable")
    run("tripped")
    Execution.objects.filter(id=transport.id).update(api_key=api_key)
    version = transport.signature_version
    url = reverse("admin:executions_executionfailure_changelist")
    for query, expected in [
        ({"cause": "transport"}, {"unreachable"}),
        ({"cause": "breaker_open"}, {"tripped"}),
        ({"error_type": "CircuitOpen"}, {"tripped"}),
        ({"provider__id__exact": unreachable.id}, {"unreachable"}),
        ({"execution__api_key__id__exact": api_key.pk}, {"unreachable"}),
        ({"execution__signature_version__number": version.number}, {"unreachable", "tripped"}),
        (
            {"execution__signature_version__signature__id__exact": version.signature_id},
            {"unreachable", "tripped"},
        ),
        ({"started_at__gte": "2000-01-01T00:00:00+00:00"}, {"unreachable", "tripped"}),
        ({"q": "unreachable"}, {"unreachable"}),
        ({"q": str(transport.id)}, {"unreachable"}),
        ({}, {"unreachable", "tripped"}),
    ]:
        response = admin_client.get(url, query)
        assert response.status_code == 200, query
        shown = {failure.provider.name for failure in response.context["cl"].result_list}
        assert shown == expected, query


@pytest.mark.django_db
def test_the_executions_list_filters_by_what_an_operator_asks(run, admin_client, api_key):
    _remote("unreachable", adapter="chat")
    ProviderFactory(name="echo")
    failed = run("unreachable")
    succeeded = run("echo")
    Execution.objects.filter(id=succeeded.id).update(api_key=api_key)
    url = reverse("admin:executions_execution_changelist")
    for query, expected in [
        ({"error_cause": "transport"}, {failed.id}),
        ({"provider__id__exact": succeeded.provider_id}, {succeeded.id}),
        ({"requested_provider__id__exact": failed.requested_provider_id}, {failed.id}),
        ({"api_key__id__exact": api_key.pk}, {succeeded.id}),
        ({"signature_version__number": 1}, {failed.id, succeeded.id}),
        (
            {"signature_version__signature__id__exact": failed.signature_version.signature_id},
            {failed.id, succeeded.id},
        ),
    ]:
        response = admin_client.get(url, query)
        assert response.status_code == 200, query
        assert {row.id for row in response.context["cl"].result_list} == expected, query
    assert "background:#2f855a" in response.content.decode()


@pytest.mark.django_db
def test_the_failure_log_is_a_bounded_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    versions = [SignatureVersionFactory(spec=QA_SPEC) for _ in range(4)]
    providers = [ProviderFactory() for _ in range(4)]
    started = Execution._meta.get_field("queued_at").default()
    executions = Execution.objects.bulk_create(
        Execution(
            signature_version=versions[index % 4],
            requested_provider=providers[index % 4],
            inputs={"question": "q"},
            status=Execution.Status.FAILED,
            finished_at=started,
            error_code="providers_exhausted",
            error_cause=FailureCause.TRANSPORT,
        )
        for index in range(200)
    )
    ExecutionAttempt.objects.bulk_create(
        ExecutionAttempt(
            execution=execution,
            run=1,
            position=0,
            provider=execution.requested_provider,
            outcome=ExecutionAttempt.Outcome.FAILED,
            cause=FailureCause.TRANSPORT,
            error_type="LMTransportError",
            error_code="transport",
            error_message="The provider could not be reached.",
            started_at=started - timedelta(seconds=index),
            prompt="p" * 5000,
        )
        for index, execution in enumerate(executions)
    )
    url = reverse("admin:executions_executionfailure_changelist")
    with django_assert_max_num_queries(20):
        response = admin_client.get(url, {"all": ""})
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 200


# Rows written before the failure log ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_earlier_failures_their_cause(qa_version):
    def migrate(targets) -> None:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(targets)

    provider = ProviderFactory(name="old")
    now = timezone.now()

    def execution(code: str, *attempt_codes: str) -> Execution:
        row = Execution.objects.create(
            signature_version=qa_version,
            requested_provider=provider,
            inputs=QA_LEVEL_INPUTS,
            status=Execution.Status.FAILED,
            finished_at=now,
            error_code=code,
            attempts=1,
        )
        for position, attempt_code in enumerate(attempt_codes):
            ExecutionAttempt.objects.create(
                execution=row,
                run=1,
                position=position,
                provider=provider,
                outcome="rejected" if attempt_code == "circuit_open" else "failed",
                error_code=attempt_code,
                started_at=now,
            )
        return row

    exhausted = execution("providers_exhausted", "circuit_open", "adapter_parse_error", "server")
    refused = execution("providers_exhausted", "circuit_open")
    lost = execution("worker_lost")
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        migrate([("executions", "0006_attempt_error_detail")])
    finally:
        migrate(latest)
    causes = dict(Execution.objects.values_list("id", "error_cause"))
    assert (causes[exhausted.id], causes[refused.id], causes[lost.id]) == (
        "parse",
        "breaker_open",
        "worker_lost",
    )
    assert list(
        exhausted.provider_attempts.order_by("position").values_list("cause", flat=True)
    ) == ["breaker_open", "parse", "provider_error"]
