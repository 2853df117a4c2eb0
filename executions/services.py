"""Services of the executions app: create (validate, write, enqueue on commit), claim, run with
breakers and fallback, cancel, and reap executions whose worker died.

An execution row always exists before its task is enqueued (`transaction.on_commit`), tasks
carry only ids, and every status change is a guarded update on the status it expects (plus the
claim number for a running row), so a task delivered twice, a late worker or a reaper racing a
worker can never run an execution twice or overwrite a newer outcome.

A lost database connection (`core.db`) is retried on a new one: each write can tell whether an
earlier try went through (the row's id chosen before its insert, the claim's `started_at`, the
finish's `finished_at`, an attempt's unique position), so a request answers with the execution
it wrote and a worker records the outcome of a provider call it made, never making it again.
"""

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dspy
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from core.db import CONNECTION_ERRORS, REQUEST_RETRY, db_reconnect, db_retry
from core.errors import ApplicationError, DatabaseUnavailable
from core.generation import generation_settings_check
from core.secrets import known_secrets, scrub
from executions.admission import execution_admit
from executions.broker import broker_stranded_task_ids
from executions.exceptions import ExecutionNotCancellable, IdempotencyKeyReused, InvalidConfig
from executions.models import Execution, ExecutionAttempt
from executions.selectors import execution_wait_all
from providers.calls import ProviderCall, provider_call, provider_route
from providers.exceptions import ProviderDisabled
from providers.models import Provider
from providers.selectors import provider_fallback_chain, provider_get, provider_get_default
from registry.inputs import signature_version_validate_inputs
from registry.selectors import signature_version_resolve
from registry.services.versions import signature_version_build

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

ERROR_MESSAGE_MAX_LENGTH = 4000


@dataclass(frozen=True)
class ExecutionCreateResult:
    execution: Execution
    created: bool


def execution_config_validate(*, config: Any, defaults: dict[str, Any] | None = None) -> dict:
    """The generation settings an execution runs with: the version's `defaults` (its
    `lm_defaults`) overridden by the request's `config`, checked against the bounds of
    `core.generation` with `max_tokens` at most `EXECUTIONS_MAX_TOKENS_LIMIT`, whichever of
    the two set it. Raises InvalidConfig listing every problem."""
    limit = settings.EXECUTIONS_MAX_TOKENS_LIMIT
    clean, errors = generation_settings_check(config, max_tokens_limit=limit)
    if errors:
        raise InvalidConfig(errors)
    merged = {**(defaults or {}), **clean}
    if merged.get("max_tokens", 0) > limit:
        raise InvalidConfig(
            {
                "max_tokens": [
                    {
                        "code": "out_of_range",
                        "message": (
                            f"The signature version's lm_defaults ask for max_tokens="
                            f"{merged['max_tokens']}, above this server's limit of {limit}; "
                            f"pass config.max_tokens of at most {limit}."
                        ),
                    }
                ]
            }
        )
    return merged


def execution_request_hash(
    *,
    signature: str,
    version: int | str | None,
    inputs: Any,
    config: Any,
    provider: str | None,
) -> str:
    """A digest of what a request asks to run, to tell an idempotent retry from a new request.

    How the client waits (`mode`, `timeout_s`) is left out: retrying a sync request as async
    is the same request.
    """
    document = {
        "signature": signature,
        "version": version,
        "inputs": inputs,
        "config": config or {},
        "provider": provider,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _idempotent_match(*, api_key, user, idempotency_key: str) -> Execution | None:
    if not idempotency_key:
        return None
    if api_key is not None:
        scope = Q(api_key=api_key)
    elif user is not None and user.is_authenticated:
        scope = Q(api_key__isnull=True, created_by=user)
    else:
        return None
    return Execution.objects.filter(scope, idempotency_key=idempotency_key).first()


def _replay(existing: Execution, request_hash: str) -> ExecutionCreateResult:
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReused()
    return ExecutionCreateResult(execution=existing, created=False)


def _resolve_provider(name: str | None) -> Provider:
    provider = provider_get(name=name) if name else provider_get_default()
    if not provider.enabled:
        raise ProviderDisabled(provider.name)
    return provider


def execution_create(
    *,
    signature: str,
    inputs: Any,
    version: int | str | None = None,
    config: Any = None,
    provider: str | None = None,
    mode: str = Execution.Mode.SYNC,
    timeout_s: float | None = None,
    api_key=None,
    user=None,
    idempotency_key: str = "",
    batch_id: uuid.UUID | None = None,
) -> ExecutionCreateResult:
    """Validate a request, write its execution and enqueue it once the row is committed.

    Raises the registry's errors (unknown signature, version or alias; invalid inputs), the
    providers' (unknown or disabled provider), InvalidConfig, or IdempotencyKeyReused; nothing
    is written or enqueued then. A retry with the same idempotency key and body returns the
    first execution (`created` False) without running anything again.

    A lost database connection is retried (reads), or resolved by looking the row up by its id
    (the insert: its commit may have gone through with only the answer lost); what cannot be
    resolved that way raises DatabaseUnavailable, never a connection error.
    """
    request_hash = execution_request_hash(
        signature=signature, version=version, inputs=inputs, config=config, provider=provider
    )

    def prepare() -> ExecutionCreateResult | tuple[Execution, Provider]:
        existing = _idempotent_match(api_key=api_key, user=user, idempotency_key=idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash)
        signature_version = signature_version_resolve(name=signature, ref=version)
        clean_inputs = signature_version_validate_inputs(version=signature_version, inputs=inputs)
        run_config = execution_config_validate(
            config=config, defaults=signature_version.lm_defaults
        )
        chosen = _resolve_provider(provider)
        execution_admit(provider=chosen, api_key=api_key, user=user)
        execution = Execution(
            signature_version=signature_version,
            requested_provider=chosen,
            inputs=clean_inputs,
            config=run_config,
            mode=mode,
            timeout_s=timeout_s,
            api_key=api_key,
            created_by=user if user is not None and user.is_authenticated and user.pk else None,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            batch_id=batch_id,
        )
        return execution, chosen

    try:
        prepared = db_retry(prepare, policy=REQUEST_RETRY)
        if isinstance(prepared, ExecutionCreateResult):
            return prepared
        execution, chosen = prepared
        return _execution_insert(
            execution,
            chosen,
            match=lambda: _idempotent_match(
                api_key=api_key, user=user, idempotency_key=idempotency_key
            ),
        )
    except CONNECTION_ERRORS as error:
        raise DatabaseUnavailable() from error


def _execution_insert(
    execution: Execution, chosen: Provider, *, match: Callable[[], Execution | None]
) -> ExecutionCreateResult:
    # The execution's id is chosen before the insert, so after a lost connection the row can
    # be looked up: committed (answer with it), or not (insert it once more).
    for _ in range(2):
        try:
            with transaction.atomic():
                execution.save(force_insert=True)
                _enqueue_on_commit(execution.id, chosen)
        except IntegrityError:
            # A concurrent request with the same idempotency key won the insert.
            existing = db_retry(match, policy=REQUEST_RETRY)
            if existing is None:
                raise
            return _replay(existing, execution.request_hash)
        except CONNECTION_ERRORS:
            if transaction.get_connection().in_atomic_block:
                raise
            db_reconnect()
            stored = db_retry(
                lambda: Execution.objects.filter(id=execution.id).first(), policy=REQUEST_RETRY
            )
            if stored is not None:
                logger.warning(
                    "Execution %s was committed but the answer of its commit was lost",
                    execution.id,
                )
                # The on-commit enqueue never ran; a failure here leaves it to the reaper.
                try:
                    execution_enqueue(execution_id=stored.id, provider=chosen)
                except Exception:
                    logger.exception("Could not enqueue execution %s", stored.id)
                return ExecutionCreateResult(execution=stored, created=True)
        else:
            return ExecutionCreateResult(execution=execution, created=True)
    raise DatabaseUnavailable()


@dataclass(frozen=True)
class BatchItem:
    """One item of a batch request: its fields for `execution_create`, or why it was refused
    before reaching the services (its shape was wrong)."""

    request: dict[str, Any] | None = None
    error: ApplicationError | None = None


@dataclass(frozen=True)
class BatchItemOutcome:
    index: int
    execution: Execution | None = None
    error: ApplicationError | None = None


@dataclass(frozen=True)
class BatchResult:
    batch_id: uuid.UUID
    items: list[BatchItemOutcome]

    @property
    def pending(self) -> bool:
        return any(item.execution and not item.execution.is_finished for item in self.items)


def execution_create_batch(
    *,
    items: list[BatchItem],
    mode: str = Execution.Mode.SYNC,
    wait_s: float = 0.0,
    api_key=None,
    user=None,
    idempotency_key: str = "",
) -> BatchResult:
    """Create one execution per item, each accepted or refused on its own, all in one batch.

    Item `i` takes the idempotency key `<key>#<i>`, so a replayed batch returns the same
    executions (and reports the batch they belong to). In sync mode the batch waits up to
    `wait_s` for every accepted execution to finish, with one query per poll.
    """
    batch_id = uuid.uuid4()
    outcomes: list[BatchItemOutcome] = []
    for index, item in enumerate(items):
        if item.error is not None:
            outcomes.append(BatchItemOutcome(index=index, error=item.error))
            continue
        try:
            result = execution_create(
                **item.request,
                mode=mode,
                api_key=api_key,
                user=user,
                idempotency_key=f"{idempotency_key}#{index}" if idempotency_key else "",
                batch_id=batch_id,
            )
        except ApplicationError as error:
            outcomes.append(BatchItemOutcome(index=index, error=error))
        else:
            outcomes.append(BatchItemOutcome(index=index, execution=result.execution))
    executions = execution_wait_all(
        execution_ids=[outcome.execution.id for outcome in outcomes if outcome.execution],
        timeout_s=wait_s if mode == Execution.Mode.SYNC else 0.0,
    )
    outcomes = [
        BatchItemOutcome(index=outcome.index, execution=executions[outcome.execution.id])
        if outcome.execution
        else outcome
        for outcome in outcomes
    ]
    replayed = next((outcome.execution.batch_id for outcome in outcomes if outcome.execution), None)
    return BatchResult(batch_id=replayed or batch_id, items=outcomes)


def execution_enqueue(*, execution_id: uuid.UUID, provider: Provider) -> str:
    """Hand the execution to django-q2, on the cluster the provider's route names.

    A lost connection is retried; a task enqueued twice that way runs once (the second
    delivery finds nothing to claim)."""
    cluster = provider_route(provider=provider).cluster
    options = {"cluster": cluster} if cluster else {}

    def enqueue() -> str:
        task_id = async_task(
            "executions.tasks.execution_run",
            str(execution_id),
            q_options=options | {"task_name": f"execution-{execution_id}"},
        )
        Execution.objects.filter(id=execution_id).update(task_id=task_id)
        return task_id

    return db_retry(enqueue, policy=REQUEST_RETRY)


def _enqueue_on_commit(execution_id: uuid.UUID, provider: Provider) -> None:
    # Robust: a broker outage must not turn the committed row into an error; the reaper
    # enqueues queued rows that never got a task.
    transaction.on_commit(
        lambda: execution_enqueue(execution_id=execution_id, provider=provider), robust=True
    )


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one running execution: its `run` is the execution's attempt count."""

    execution_id: uuid.UUID
    run: int


def execution_claim(*, execution_id: uuid.UUID | str, now: Clock = timezone.now) -> Claim | None:
    """Move a queued execution to running for this worker; None when it is not queued any more
    (already claimed by a duplicate delivery, cancelled, finished).

    Survives a lost connection: the claim's `started_at` marks the row as this claim's, so a
    retry can tell its own earlier update that went through from another worker's."""
    moment = now()
    tries = 0

    def claim() -> int | None:
        nonlocal tries
        tries += 1
        claimed = Execution.objects.filter(id=execution_id, status=Execution.Status.QUEUED).update(
            status=Execution.Status.RUNNING,
            attempts=F("attempts") + 1,
            started_at=moment,
            heartbeat_at=moment,
        )
        if not claimed and tries == 1:
            return None
        return (
            Execution.objects.filter(
                id=execution_id, status=Execution.Status.RUNNING, started_at=moment
            )
            .values_list("attempts", flat=True)
            .first()
        )

    run = db_retry(claim)
    if run is None:
        return None
    return Claim(execution_id=uuid.UUID(str(execution_id)), run=run)


def execution_claim_companions(
    *, claim: Claim, limit: int, now: Clock = timezone.now
) -> list[Claim]:
    """Claim up to `limit` more queued executions for the same provider, oldest first, so one
    worker runs them together and the local runtime can batch their generations."""
    if limit <= 0:
        return []

    def candidates() -> list[uuid.UUID]:
        provider_id = (
            Execution.objects.filter(id=claim.execution_id)
            .values_list("requested_provider_id", flat=True)
            .get()
        )
        return list(
            Execution.objects.filter(
                status=Execution.Status.QUEUED, requested_provider_id=provider_id
            )
            .order_by("queued_at")
            .values_list("id", flat=True)[: limit * 2]
        )

    claims: list[Claim] = []
    for candidate in db_retry(candidates):
        companion = execution_claim(execution_id=candidate, now=now)
        if companion is not None:
            claims.append(companion)
            if len(claims) == limit:
                break
    return claims


def _claims_filter(claims: list[Claim]) -> Q:
    condition = Q(pk__in=[])
    for claim in claims:
        condition |= Q(id=claim.execution_id, attempts=claim.run)
    return condition


def execution_heartbeat(*, claims: list[Claim], now: Clock = timezone.now) -> int:
    """Tell the reaper these executions are alive; returns how many rows were still ours."""
    return Execution.objects.filter(_claims_filter(claims), status=Execution.Status.RUNNING).update(
        heartbeat_at=now()
    )


def _error_fields(*, error_type: str, code: str, message: str) -> dict[str, str]:
    """The error columns of an execution or an attempt. `message` is what API clients see:
    the toolkit's own words, scrubbed once more in case a caller let a secret in (before it
    is cut, so that no half of a secret escapes the patterns)."""
    return {
        "error_type": error_type[:200],
        "error_code": code[:64],
        "error_message": scrub(message, secrets=known_secrets())[:ERROR_MESSAGE_MAX_LENGTH],
    }


def _describe(error: BaseException) -> str:
    """A one-line summary of an error inside the toolkit, scrubbed."""
    text = str(error).strip() or type(error).__name__
    return scrub(text.splitlines()[0], secrets=known_secrets())[:300]


def _jsonable(outputs: dict[str, Any]) -> dict[str, Any]:
    return _without_nul(json.loads(json.dumps(outputs, default=str)))


def _without_nul(value: Any) -> Any:
    # PostgreSQL cannot store U+0000 in jsonb (nor text), and a model may well generate it:
    # the outputs keep a visible replacement character instead of failing the execution.
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {key: _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


@dataclass
class _Run:
    claim: Claim
    now: Clock
    started: float = field(default_factory=time.perf_counter)
    position: int = 0
    failures: list[str] = field(default_factory=list)
    only_timeouts: bool = True

    # Both writes record a provider call already made, so they are retried after a lost
    # connection (never the call), and each can tell whether an earlier try went through.

    def attempt(self, call: ProviderCall, **fields: Any) -> None:
        tries = 0

        def write() -> None:
            nonlocal tries
            tries += 1
            try:
                ExecutionAttempt.objects.create(
                    execution_id=self.claim.execution_id,
                    run=self.claim.run,
                    position=self.position,
                    provider=call.provider,
                    started_at=call.started_at,
                    duration_s=call.duration_s,
                    **fields,
                )
            except IntegrityError:
                # Only this run writes its positions: the earlier try was committed.
                if tries == 1:
                    raise

        db_retry(write)
        self.position += 1

    def finish(self, **fields: Any) -> bool:
        moment = self.now()
        execution_time_s = time.perf_counter() - self.started
        tries = 0

        def write() -> bool:
            nonlocal tries
            tries += 1
            ours = Execution.objects.filter(id=self.claim.execution_id, attempts=self.claim.run)
            if ours.filter(status=Execution.Status.RUNNING).update(
                finished_at=moment, execution_time_s=execution_time_s, **fields
            ):
                return True
            return tries > 1 and ours.filter(status=fields["status"], finished_at=moment).exists()

        finished = db_retry(write)
        if not finished:
            logger.warning(
                "Execution %s run %s finished after it was taken away from this worker; "
                "its outcome was discarded.",
                self.claim.execution_id,
                self.claim.run,
            )
        return bool(finished)


def execution_process(*, claim: Claim, now: Clock = timezone.now) -> str:
    """Run a claimed execution: each provider of the requested provider's fallback chain in
    turn, skipping those whose breaker is open and moving on after a counted failure, until
    one answers. Returns the final status."""
    run = _Run(claim=claim, now=now)

    def load() -> tuple[Execution, dspy.Module, list[Provider]]:
        execution = Execution.objects.select_related(
            "signature_version__signature", "requested_provider"
        ).get(id=claim.execution_id)
        program = signature_version_build(version=execution.signature_version)
        return execution, program, provider_fallback_chain(provider=execution.requested_provider)

    try:
        execution, program, chain = db_retry(load)
        for provider in chain:
            status = _try_provider(run, execution, program, provider)
            if status is not None:
                return status
    except CONNECTION_ERRORS:
        # The database stayed away longer than the retries: no outcome can be written, so
        # the row stays running and the reaper takes it back once its heartbeat is stale.
        logger.exception("Execution %s lost the database", claim.execution_id)
        raise
    except Exception as error:
        logger.exception("Execution %s failed inside the toolkit", claim.execution_id)
        run.finish(
            status=Execution.Status.FAILED,
            **_error_fields(
                error_type=type(error).__name__,
                code="internal_error",
                # The cause is in the log (above, with its traceback), not in client text.
                message="The toolkit failed while running this execution; the error was logged.",
            ),
        )
        return Execution.Status.FAILED
    status = Execution.Status.TIMED_OUT if run.only_timeouts else Execution.Status.FAILED
    run.finish(
        status=status,
        **_error_fields(
            error_type="ProvidersExhausted",
            code="providers_timed_out" if run.only_timeouts else "providers_exhausted",
            message="Every provider in the fallback chain failed: " + "; ".join(run.failures),
        ),
    )
    return status


def _try_provider(
    run: _Run, execution: Execution, program: dspy.Module, provider: Provider
) -> str | None:
    """One provider's turn: the final status, or None to go on to the next provider."""
    call = provider_call(
        provider=provider,
        program=program,
        inputs=execution.inputs,
        config=execution.config,
        now=run.now,
    )
    if call.refused:
        run.attempt(
            call,
            outcome=ExecutionAttempt.Outcome.REJECTED,
            **_error_fields(
                error_type="CircuitOpen", code=call.error_code, message=call.public_message
            ),
        )
        run.failures.append(f"{provider.name}: circuit breaker open")
        run.only_timeouts = False
        return None
    if call.error is not None:
        error = call.error
        # The upstream's own words (scrubbed) are for staff, on the attempt only; clients get
        # the code and the toolkit's message (`ProviderCall`).
        fields = _error_fields(
            error_type=type(error).__name__, code=call.error_code, message=call.public_message
        )
        run.attempt(
            call,
            outcome=ExecutionAttempt.Outcome.FAILED,
            counted_by_breaker=call.counted_by_breaker,
            error_detail=call.detail,
            **fields,
        )
        if not call.counted_by_breaker:
            # The request itself is at fault (or the provider refuses it outright): another
            # provider would not do better, so the execution fails here.
            run.finish(status=Execution.Status.FAILED, **fields)
            return Execution.Status.FAILED
        run.failures.append(f"{provider.name}: {type(error).__name__}: {call.public_message}")
        run.only_timeouts = run.only_timeouts and isinstance(
            error, dspy.LMTimeoutError | TimeoutError
        )
        return None
    result = call.result
    run.attempt(call, outcome=ExecutionAttempt.Outcome.SUCCEEDED)
    run.finish(
        status=Execution.Status.SUCCEEDED,
        provider=provider,
        outputs=_jsonable(result.outputs),
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        memory_mb=result.peak_memory_mb,
        error_type="",
        error_code="",
        error_message="",
    )
    return Execution.Status.SUCCEEDED


def execution_cancel(*, execution: Execution, now: Clock = timezone.now) -> Execution:
    """Cancel a queued execution (its task, when delivered, finds nothing to claim)."""
    cancelled = Execution.objects.filter(id=execution.id, status=Execution.Status.QUEUED).update(
        status=Execution.Status.CANCELLED,
        finished_at=now(),
        **_error_fields(
            error_type="Cancelled", code="cancelled", message="Cancelled before it started."
        ),
    )
    execution.refresh_from_db()
    if not cancelled:
        raise ExecutionNotCancellable(execution.status)
    return execution


def _queued_without_a_live_task(*, threshold: datetime, now: datetime) -> list[Execution]:
    queued = (
        Execution.objects.filter(status=Execution.Status.QUEUED, queued_at__lt=threshold)
        .select_related("requested_provider")
        .only("id", "task_id", "requested_provider")
        .order_by("queued_at")
    )
    never_enqueued = list(queued.filter(task_id="")[:REAP_BATCH])
    by_cluster: dict[str | None, list[Execution]] = {}
    for row in queued.exclude(task_id="")[:REAP_BATCH]:
        cluster = provider_route(provider=row.requested_provider).cluster
        by_cluster.setdefault(cluster, []).append(row)
    stranded: list[Execution] = []
    for cluster, rows in by_cluster.items():
        lost = broker_stranded_task_ids(
            cluster=cluster,
            task_ids=[row.task_id for row in rows],
            pulled_before=threshold,
            now=now,
        )
        stranded += [row for row in rows if row.task_id in lost]
    return never_enqueued + stranded


@dataclass(frozen=True)
class ReapResult:
    requeued: list[uuid.UUID]
    failed: list[uuid.UUID]
    enqueued: list[uuid.UUID]


REAP_BATCH = 500


@transaction.atomic
def execution_reap_stale(*, now: Clock = timezone.now) -> ReapResult:
    """Recover running executions whose worker stopped sending heartbeats (killed, lost).

    Each goes back to the queue while it has claims left (`EXECUTIONS_MAX_RUN_ATTEMPTS`), else
    fails with the code `worker_lost`. Queued executions (older than the stale threshold)
    whose task will not reach a worker by itself are enqueued again: those that never got a
    task (the broker was unreachable when they were committed), and those whose task is
    stranded in the broker (pulled by a cluster that died, see `executions.broker`).
    """
    moment = now()
    stale_after = settings.EXECUTIONS_STALE_AFTER_S
    threshold = moment - timedelta(seconds=stale_after)
    max_attempts = settings.EXECUTIONS_MAX_RUN_ATTEMPTS
    orphans = _queued_without_a_live_task(threshold=threshold, now=moment)
    for orphan in orphans:
        _enqueue_on_commit(orphan.id, orphan.requested_provider)
    stale = (
        Execution.objects.filter(status=Execution.Status.RUNNING, heartbeat_at__lt=threshold)
        .select_related("requested_provider")
        .only("id", "attempts", "requested_provider")[:REAP_BATCH]
    )
    requeued: list[uuid.UUID] = []
    failed: list[uuid.UUID] = []
    for row in stale:
        execution_id, attempts = row.id, row.attempts
        guarded = Execution.objects.filter(
            id=execution_id,
            status=Execution.Status.RUNNING,
            attempts=attempts,
            heartbeat_at__lt=threshold,
        )
        if attempts < max_attempts:
            if guarded.update(
                status=Execution.Status.QUEUED, heartbeat_at=None, started_at=None, task_id=""
            ):
                requeued.append(execution_id)
                _enqueue_on_commit(execution_id, row.requested_provider)
        elif guarded.update(
            status=Execution.Status.FAILED,
            finished_at=moment,
            **_error_fields(
                error_type="WorkerLost",
                code="worker_lost",
                message=(
                    f"The worker running this execution stopped sending heartbeats (none for "
                    f"{stale_after:g}s), {attempts} time(s); gave up after {max_attempts} "
                    f"attempts."
                ),
            ),
        ):
            failed.append(execution_id)
    enqueued = [orphan.id for orphan in orphans]
    if requeued or failed or enqueued:
        logger.warning(
            "Reaped executions: requeued %s, failed %s, enqueued again %s",
            [str(item) for item in requeued],
            [str(item) for item in failed],
            [str(item) for item in enqueued],
        )
    return ReapResult(requeued=requeued, failed=failed, enqueued=enqueued)
