"""Breakers driven by real failing providers: an `openai` provider pointing at a closed port,
and one at a local HTTP server answering 500. Executions run through the services with a
movable clock, so the open period passes without sleeping."""

import pytest

from executions.models import Execution
from executions.services.create import execution_create
from executions.services.runs import execution_claim, execution_process
from providers.models import CircuitBreaker
from tests.support.factories import ProviderFactory
from tests.support.servers import free_port
from tests.support.specs import QA_LEVEL_INPUTS


@pytest.fixture
def run_execution(qa_version, clock, django_capture_on_commit_callbacks):
    """Create an execution on a provider and run it in this process at the clock's time."""

    def run(provider_name: str) -> Execution:
        with django_capture_on_commit_callbacks(execute=False):
            execution = execution_create(
                signature="qa", inputs=QA_LEVEL_INPUTS, provider=provider_name
            )
        claim = execution_claim(execution_id=execution.execution.id, now=clock)
        execution_process(claim=claim, now=clock)
        return Execution.objects.get(id=claim.execution_id)

    return run


def _configure(provider) -> None:
    CircuitBreaker.objects.update_or_create(
        provider=provider,
        defaults={
            "sliding_window_size": 4,
            "minimum_calls": 3,
            "failure_rate_threshold": 50,
            "open_duration_s": 30,
            "half_open_permitted_calls": 1,
        },
    )


def _state(provider) -> str:
    return CircuitBreaker.objects.get(provider=provider).state


def _transitions(provider) -> list[tuple[str, str]]:
    events = CircuitBreaker.objects.get(provider=provider).events.order_by("at", "id")
    return [(event.from_state, event.to_state) for event in events]


@pytest.mark.django_db
def test_a_closed_port_trips_the_breaker_until_the_endpoint_comes_back(
    run_execution, clock, start_openai_server
):
    port = free_port()
    provider = ProviderFactory(
        name="unreachable",
        kind="openai",
        base_url=f"http://127.0.0.1:{port}/v1",
        adapter="chat",
        timeout_s=5,
    )
    _configure(provider)

    for _ in range(3):
        execution = run_execution("unreachable")
        assert execution.status == "failed"
        assert execution.provider_attempts.get().error_type == "LMTransportError"
    assert _state(provider) == CircuitBreaker.State.OPEN

    # Open: calls are refused without touching the network.
    clock.advance(29)
    refused = run_execution("unreachable")
    attempt = refused.provider_attempts.get()
    assert (attempt.outcome, attempt.error_code, attempt.duration_s) == (
        "rejected",
        "circuit_open",
        0,
    )
    assert _state(provider) == CircuitBreaker.State.OPEN

    # The endpoint comes back on the same port; after the open period one trial call closes it.
    server = start_openai_server(port=port)
    clock.advance(1)
    recovered = run_execution("unreachable")
    assert recovered.status == "succeeded"
    assert recovered.outputs == {"answer": "Paris"}
    assert len(server.requests) == 1
    assert _state(provider) == CircuitBreaker.State.CLOSED
    assert _transitions(provider) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


@pytest.mark.django_db
def test_a_server_answering_500_trips_stays_open_half_opens_and_closes(
    run_execution, clock, openai_server
):
    openai_server.mode = "server_error"
    provider = ProviderFactory(
        name="flaky", kind="openai", base_url=openai_server.base_url, adapter="chat", timeout_s=5
    )
    _configure(provider)

    run_execution("flaky")
    run_execution("flaky")
    assert _state(provider) == CircuitBreaker.State.CLOSED  # below the minimum number of calls
    failed = run_execution("flaky")
    assert failed.provider_attempts.get().error_type == "LMServerError"
    assert failed.provider_attempts.get().counted_by_breaker is True
    assert _state(provider) == CircuitBreaker.State.OPEN
    assert len(openai_server.requests) == 3

    # Still failing when the trial call comes: open again for another period.
    clock.advance(30)
    run_execution("flaky")
    assert len(openai_server.requests) == 4
    assert _state(provider) == CircuitBreaker.State.OPEN
    clock.advance(10)
    run_execution("flaky")
    assert len(openai_server.requests) == 4  # refused while open

    openai_server.mode = "ok"
    clock.advance(20)
    assert run_execution("flaky").status == "succeeded"
    assert _state(provider) == CircuitBreaker.State.CLOSED
    assert _transitions(provider) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
