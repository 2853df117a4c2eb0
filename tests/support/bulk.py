"""Many executions at once, for the console's bounded-query tests and its benchmark.

Signatures, providers, API keys and users come from the factories (through the services);
the executions and their attempts are written with `bulk_create`, since creating 10,000 of
them through `execution_create` would take minutes. Each row obeys the model's constraints
(a finished execution has `finished_at`, a running one a heartbeat), and the mix is fixed by
`seed`.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from rest_framework_api_key.models import APIKey

from executions.models import Execution, ExecutionAttempt
from providers.models import Provider
from registry.models import SignatureVersion
from tests.support.engines import ECHO_ENGINE
from tests.support.factories import (
    APIKeyFactory,
    ProviderFactory,
    SignatureVersionFactory,
    StaffUserFactory,
)

# Status -> weight: mostly successes, some failures, a few of everything else.
STATUS_MIX = {
    Execution.Status.SUCCEEDED: 80,
    Execution.Status.FAILED: 9,
    Execution.Status.TIMED_OUT: 3,
    Execution.Status.CANCELLED: 3,
    Execution.Status.QUEUED: 3,
    Execution.Status.RUNNING: 2,
}
BATCH_SIZE = 2000


@dataclass
class BulkWorld:
    versions: list[SignatureVersion]
    providers: list[Provider]
    api_keys: list[APIKey]
    users: list[User]


def bulk_world(*, signatures: int = 4, providers: int = 3, api_keys: int = 3) -> BulkWorld:
    """The rows executions refer to, each created through its factory."""
    return BulkWorld(
        versions=[
            SignatureVersionFactory(signature__name=f"bulk_signature_{index}")
            for index in range(signatures)
        ],
        providers=[
            ProviderFactory(name=f"bulk-provider-{index}", engine_path=ECHO_ENGINE)
            for index in range(providers)
        ],
        api_keys=[APIKeyFactory(name=f"bulk-client-{index}") for index in range(api_keys)],
        users=[StaffUserFactory(username="bulk-staff")],
    )


def bulk_executions(
    *, world: BulkWorld, count: int, now: datetime, span: timedelta = timedelta(days=7), seed=0
) -> int:
    """`count` executions spread over `span` before `now` across the world's signatures,
    providers and clients, each claimed one with one attempt; returns the attempts written."""
    rng = random.Random(seed)
    statuses = rng.choices(list(STATUS_MIX), weights=list(STATUS_MIX.values()), k=count)
    executions = []
    attempts = []
    for status in statuses:
        queued_at = now - span * rng.random()
        provider = rng.choice(world.providers)
        api_key = rng.choice([*world.api_keys, None])
        execution = Execution(
            status=status,
            signature_version=rng.choice(world.versions),
            requested_provider=provider,
            inputs={"question": "q"},
            api_key=api_key,
            created_by=None if api_key else world.users[0],
            queued_at=queued_at,
        )
        if status in (Execution.Status.QUEUED, Execution.Status.CANCELLED):
            execution.finished_at = queued_at if status == Execution.Status.CANCELLED else None
            executions.append(execution)
            continue
        execution.attempts = 1
        execution.started_at = queued_at + timedelta(seconds=rng.uniform(0.01, 2.0))
        execution.heartbeat_at = execution.started_at
        if status != Execution.Status.RUNNING:
            execution.execution_time_s = rng.lognormvariate(-1.0, 0.6)
            execution.finished_at = execution.started_at + timedelta(
                seconds=execution.execution_time_s
            )
            execution.input_tokens = rng.randint(20, 200)
            execution.output_tokens = rng.randint(1, 40)
        if status == Execution.Status.SUCCEEDED:
            execution.provider = provider
            execution.outputs = {"answer": "a"}
        elif status != Execution.Status.RUNNING:
            execution.error_code = (
                "provider_error" if status == Execution.Status.FAILED else "timed_out"
            )
            execution.error_cause = (
                "provider_error" if status == Execution.Status.FAILED else "timeout"
            )
            execution.error_message = "The provider failed."
        executions.append(execution)
        if execution.finished_at:
            attempts.append(
                ExecutionAttempt(
                    execution=execution,
                    run=1,
                    position=0,
                    provider=provider,
                    outcome="succeeded" if status == Execution.Status.SUCCEEDED else "failed",
                    error_code=execution.error_code,
                    cause=execution.error_cause,
                    started_at=execution.started_at,
                    duration_s=execution.execution_time_s,
                )
            )
    Execution.objects.bulk_create(executions, batch_size=BATCH_SIZE)
    ExecutionAttempt.objects.bulk_create(attempts, batch_size=BATCH_SIZE)
    return len(attempts)
