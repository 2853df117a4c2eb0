"""Execution services on PostgreSQL: validation, idempotency, claims, fallback, cancel, reaper."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.exceptions import ExecutionNotCancellable, IdempotencyKeyReused, InvalidConfig
from executions.models import Execution, ExecutionAttempt
from executions.services.cancel import execution_cancel
from executions.services.create import execution_config_validate, execution_create
from executions.services.reaper import execution_reap_stale
from executions.services.runs import execution_claim, execution_claim_companions, execution_process
from executions.tasks import execution_run
from providers import breakers
from providers.exceptions import ProviderDisabled, ProviderNotFound
from providers.models import CircuitBreaker
from registry.exceptions import AliasNotFound, InputValidationError, SignatureNotFound
from tests.support.factories import CLOSED_PORT_URL, APIKeyFactory, ProviderFactory
from tests.support.specs import QA_LEVEL_INPUTS


def _create(**overrides):
    arguments = {"signature": "qa", "inputs": QA_LEVEL_INPUTS, "provider": "echo"} | overrides
    return execution_create(**arguments)


@pytest.mark.django_db
def test_an_execution_is_enqueued_only_once_its_row_is_committed(
    qa_version, echo_provider, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = _create(config={"temperature": 0.5})
    assert result.created
    execution = Execution.objects.get()
    assert (execution.status, execution.signature_version, execution.requested_provider) == (
        "queued",
        qa_version,
        echo_provider,
    )
    assert execution.config == {"temperature": 0.5}
    assert len(callbacks) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"signature": "nope"}, SignatureNotFound),
        ({"version": "staging"}, AliasNotFound),
        ({"inputs": {"question": "q"}}, InputValidationError),
        ({"provider": "nope"}, ProviderNotFound),
        ({"config": {"temperature": 3}}, InvalidConfig),
    ],
)
def test_a_rejected_request_writes_and_enqueues_nothing(
    qa_version, echo_provider, django_capture_on_commit_callbacks, overrides, error
):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(error):
        _create(**overrides)
    assert not Execution.objects.exists()
    assert callbacks == []


@pytest.mark.django_db
def test_a_disabled_provider_is_refused(qa_version, echo_provider):
    echo_provider.enabled = False
    echo_provider.save()
    with pytest.raises(ProviderDisabled):
        _create()


@pytest.mark.parametrize(
    ("config", "field", "code"),
    [
        ({"temperature": -0.1}, "temperature", "out_of_range"),
        ({"temperature": "hot"}, "temperature", "wrong_type"),
        ({"max_tokens": 0}, "max_tokens", "out_of_range"),
        ({"max_tokens": 1.5}, "max_tokens", "wrong_type"),
        ({"max_tokens": 10**9}, "max_tokens", "out_of_range"),
        ({"top_p": 1.5}, "top_p", "out_of_range"),
        ({"stop": []}, "stop", "wrong_type"),
        ({"seed": 1}, "seed", "unknown_field"),
        ([], "non_field_errors", "wrong_type"),
    ],
)
def test_config_errors(config, field, code):
    with pytest.raises(InvalidConfig) as caught:
        execution_config_validate(config=config)
    assert caught.value.errors[field][0]["code"] == code


@pytest.mark.django_db
def test_the_same_idempotency_key_and_body_return_the_same_execution(
    qa_version, echo_provider, api_key
):
    first = _create(api_key=api_key, idempotency_key="k-1")
    again = _create(api_key=api_key, idempotency_key="k-1")
    assert (first.created, again.created) == (True, False)
    assert again.execution.id == first.execution.id
    assert Execution.objects.count() == 1
    with pytest.raises(IdempotencyKeyReused):
        _create(api_key=api_key, idempotency_key="k-1", inputs={**QA_LEVEL_INPUTS, "level": 2})
    # Keys are scoped to their client: another key may reuse the name.
    assert _create(api_key=APIKeyFactory(name="other"), idempotency_key="k-1").created


@pytest.mark.django_db
def test_a_task_delivered_twice_runs_once(
    qa_version, echo_provider, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        execution = _create().execution
    execution_run(str(execution.id))
    second = execution_run(str(execution.id))
    assert second.startswith("not queued any more")
    execution.refresh_from_db()
    assert (execution.status, execution.attempts) == ("succeeded", 1)
    assert ExecutionAttempt.objects.filter(execution=execution).count() == 1


@pytest.mark.django_db
def test_a_successful_run_stores_outputs_and_metrics(
    qa_version, echo_provider, django_capture_on_commit_callbacks
):
    # The test settings run django-q2 tasks inline, here when the row is committed.
    with django_capture_on_commit_callbacks(execute=True):
        execution = _create().execution
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.outputs == {"answer": "Paris"}
    assert execution.provider == echo_provider
    assert (execution.input_tokens, execution.output_tokens, execution.success) == (7, 1, True)
    assert execution.execution_time_s >= 0
    assert execution.started_at <= execution.finished_at
    assert execution.error_code == ""


@pytest.mark.django_db
def test_fallback_after_counted_failures_records_every_attempt(
    qa_version, echo_provider, broken_provider, django_capture_on_commit_callbacks
):
    ProviderFactory(
        name="front",
        kind="openai",
        base_url=CLOSED_PORT_URL,
        fallbacks=(broken_provider, echo_provider),
    )
    with django_capture_on_commit_callbacks(execute=True):
        execution = _create(provider="front").execution
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.provider == echo_provider
    attempts = list(execution.provider_attempts.order_by("position"))
    assert [(a.provider.name, a.outcome, a.counted_by_breaker) for a in attempts] == [
        ("front", "failed", True),
        ("broken", "failed", True),
        ("echo", "succeeded", False),
    ]
    assert attempts[0].error_type == "LMTransportError"
    assert attempts[1].error_type == "LMServerError"


@pytest.mark.django_db
def test_an_exhausted_chain_fails_with_an_aggregated_error(
    qa_version, broken_provider, django_capture_on_commit_callbacks
):
    ProviderFactory(
        name="front", kind="openai", base_url=CLOSED_PORT_URL, fallbacks=(broken_provider,)
    )
    breakers.breaker_force_open(provider=broken_provider)
    with django_capture_on_commit_callbacks(execute=True):
        execution = _create(provider="front").execution
    execution.refresh_from_db()
    assert (execution.status, execution.error_code, execution.success) == (
        "failed",
        "providers_exhausted",
        False,
    )
    assert "front: LMTransportError" in execution.error_message
    assert "broken: circuit breaker open" in execution.error_message
    rejected = execution.provider_attempts.get(provider=broken_provider)
    assert (rejected.outcome, rejected.error_code) == ("rejected", "circuit_open")


@pytest.mark.django_db
def test_an_uncounted_failure_fails_at_once_without_fallback(
    qa_version, echo_provider, django_capture_on_commit_callbacks, monkeypatch
):
    # The provider is valid when it is configured; its key variable goes away afterwards.
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_EXECUTIONS_MISSING", "a-key")
    ProviderFactory(
        name="needs-key",
        kind="openai",
        base_url=CLOSED_PORT_URL,
        api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_EXECUTIONS_MISSING",
        fallbacks=(echo_provider,),
    )
    monkeypatch.delenv("DSPY_TOOLKIT_PROVIDER_KEY_EXECUTIONS_MISSING")
    with django_capture_on_commit_callbacks(execute=True):
        execution = _create(provider="needs-key").execution
    execution.refresh_from_db()
    assert (execution.status, execution.error_type, execution.error_code) == (
        "failed",
        "LMAuthError",
        "auth",
    )
    assert execution.provider_attempts.count() == 1
    breaker = CircuitBreaker.objects.get(provider__name="needs-key")
    assert breaker.window == []


@pytest.mark.django_db
def test_cancel_only_queued_executions(
    qa_version, echo_provider, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        execution = _create().execution
    execution_cancel(execution=execution)
    assert execution.status == "cancelled"
    assert execution_claim(execution_id=execution.id) is None
    with pytest.raises(ExecutionNotCancellable):
        execution_cancel(execution=execution)


@pytest.mark.django_db
def test_companions_of_the_same_provider_are_claimed_together(
    qa_version, echo_provider, broken_provider, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        executions = [_create().execution for _ in range(4)]
        _create(provider="broken")
    claim = execution_claim(execution_id=executions[0].id)
    companions = execution_claim_companions(claim=claim, limit=2)
    assert [item.execution_id for item in companions] == [e.id for e in executions[1:3]]
    assert Execution.objects.filter(status="queued").count() == 2


@pytest.mark.django_db
def test_a_late_worker_cannot_overwrite_a_reaped_execution(
    qa_version, echo_provider, clock, settings, django_capture_on_commit_callbacks
):
    settings.EXECUTIONS_STALE_AFTER_S = 60
    with django_capture_on_commit_callbacks(execute=False):
        execution = _create().execution
    claim = execution_claim(execution_id=execution.id, now=clock)
    clock.advance(61)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = execution_reap_stale(now=clock)
    assert result.requeued == [execution.id]
    assert len(callbacks) == 1
    # The first worker was only slow, not dead: its outcome no longer applies.
    assert execution_process(claim=claim) == "succeeded"
    execution.refresh_from_db()
    assert execution.status == "queued"


@pytest.mark.django_db
def test_the_reaper_requeues_then_gives_up(
    qa_version, echo_provider, clock, settings, django_capture_on_commit_callbacks
):
    settings.EXECUTIONS_STALE_AFTER_S = 60
    settings.EXECUTIONS_MAX_RUN_ATTEMPTS = 2
    with django_capture_on_commit_callbacks(execute=False):
        execution = _create().execution
    execution_claim(execution_id=execution.id, now=clock)
    clock.advance(30)
    assert execution_reap_stale(now=clock).requeued == []  # heartbeat still fresh
    clock.advance(31)
    with django_capture_on_commit_callbacks(execute=False):
        assert execution_reap_stale(now=clock).requeued == [execution.id]
    execution_claim(execution_id=execution.id, now=clock)
    clock.advance(61)
    result = execution_reap_stale(now=clock)
    assert result.failed == [execution.id]
    execution.refresh_from_db()
    assert (execution.status, execution.error_code, execution.attempts) == (
        "failed",
        "worker_lost",
        2,
    )
    assert "gave up after 2 attempts" in execution.error_message


@pytest.mark.django_db
def test_listing_executions_is_a_bounded_number_of_queries(qa_version, echo_provider, api_client):
    for _ in range(3):
        _create()
    api_client.get("/api/v1/executions")
    with CaptureQueriesContext(connection) as queries:
        response = api_client.get("/api/v1/executions")
    assert response.status_code == 200
    count = len(queries)
    for _ in range(5):
        _create()
    with CaptureQueriesContext(connection) as queries:
        api_client.get("/api/v1/executions")
    assert len(queries) == count


@pytest.mark.django_db
def test_a_queued_execution_that_never_got_a_task_is_enqueued_again(
    qa_version, echo_provider, clock, settings, django_capture_on_commit_callbacks
):
    settings.EXECUTIONS_STALE_AFTER_S = 60
    with django_capture_on_commit_callbacks(execute=False):
        execution = _create().execution  # as if the broker had been unreachable
    Execution.objects.filter(id=execution.id).update(queued_at=clock())
    clock.advance(61)
    with django_capture_on_commit_callbacks(execute=True):
        result = execution_reap_stale(now=clock)
    assert result.enqueued == [execution.id]
    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.task_id


@pytest.mark.django_db
def test_a_broker_outage_does_not_fail_the_request(
    qa_version, echo_provider, django_capture_on_commit_callbacks, monkeypatch
):
    def unreachable(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("executions.services.queue.async_task", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        result = _create()
    execution = Execution.objects.get(id=result.execution.id)
    assert (execution.status, execution.task_id) == ("queued", "")
