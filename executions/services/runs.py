"""Running a claimed execution: claim (and batch companions), heartbeat, each provider of the
fallback chain in turn through `provider_call`, and the guarded finish.
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dspy
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from dspy.utils.exceptions import AdapterParseError

from core.db import CONNECTION_ERRORS, db_retry
from executions.models import Execution, ExecutionAttempt, FailureCause
from executions.services._common import Clock, error_fields
from executions.signals import (
    AttemptOutcome,
    execution_outcome,
    send_attempt_finished,
    send_execution_finished,
)
from providers.calls import ProviderCall, provider_call
from providers.exceptions import LMMalformedResponseError
from providers.models import Provider
from providers.selectors import provider_fallback_chain
from registry.services.versions import signature_version_program

logger = logging.getLogger(__name__)


def _claim_sql() -> str:
    quote = connection.ops.quote_name
    return (
        f"UPDATE {quote(Execution._meta.db_table)} SET {quote('status')} = 'running', "  # noqa: S608
        f"{quote('attempts')} = {quote('attempts')} + 1, {quote('started_at')} = %s, "
        f"{quote('heartbeat_at')} = %s WHERE {quote('id')} = %s AND {quote('status')} = 'queued' "
        f"RETURNING {quote('attempts')}"
    )


assert Execution.Status.RUNNING == "running" and Execution.Status.QUEUED == "queued"


def _claim_params(execution_id: uuid.UUID | str, moment: datetime) -> list[Any]:
    # As the ORM would send them (SQLite keeps UUIDs as hex text, PostgreSQL as uuid).
    when = Execution._meta.get_field("started_at").get_db_prep_value(moment, connection)
    key = Execution._meta.pk.get_db_prep_value(uuid.UUID(str(execution_id)), connection)
    return [when, when, key]


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
        # One statement: the update and the attempt count it made.
        with connection.cursor() as cursor:
            cursor.execute(_claim_sql(), _claim_params(execution_id, moment))
            row = cursor.fetchone()
        if row is not None or tries == 1:
            return row[0] if row else None
        # A retry: the first try's update may have gone through unseen.
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


def attempt_cause(call: ProviderCall) -> str:
    """The failure cause of a call that did not answer (`FailureCause`), from the error's class
    and HTTP status, most specific first."""
    if call.refused:
        return FailureCause.BREAKER_OPEN
    error = call.error
    status = getattr(error, "status", None)
    # Classes before statuses, and a malformed body (a server error too) before server errors.
    if isinstance(error, dspy.LMTimeoutError | TimeoutError) or status == 408:
        return FailureCause.TIMEOUT
    if isinstance(error, dspy.LMRateLimitError) or status == 429:
        return FailureCause.RATE_LIMITED
    if isinstance(error, dspy.LMAuthError) or status in (401, 403):
        return FailureCause.AUTH
    if isinstance(error, dspy.ContextWindowExceededError):
        return FailureCause.CONTEXT_WINDOW
    if isinstance(error, LMMalformedResponseError):
        return FailureCause.INVALID_OUTPUT
    if isinstance(error, AdapterParseError):
        return FailureCause.PARSE
    if isinstance(error, dspy.LMTransportError | ConnectionError):
        return FailureCause.TRANSPORT
    if isinstance(error, dspy.LMServerError) or (isinstance(status, int) and status >= 500):
        return FailureCause.PROVIDER_ERROR
    if isinstance(error, dspy.LMInvalidRequestError) or (
        isinstance(status, int) and 400 <= status < 500
    ):
        return FailureCause.INVALID_REQUEST
    return FailureCause.PROVIDER_ERROR


def execution_root_cause(causes: list[str]) -> str:
    """The root cause of an execution that exhausted its fallback chain, from the causes of
    its attempts in order: the first call that was made and failed (the requested provider's,
    unless its breaker refused it), since every later call only stood in for it; breaker_open
    when every provider's breaker refused."""
    made = [cause for cause in causes if cause != FailureCause.BREAKER_OPEN]
    return made[0] if made else FailureCause.BREAKER_OPEN


@dataclass
class _Run:
    claim: Claim
    now: Clock
    started: float = field(default_factory=time.perf_counter)
    position: int = 0
    failures: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    only_timeouts: bool = True
    # Set once loaded; None only when loading it failed inside the toolkit.
    execution: Execution | None = None

    # Both writes record a provider call already made, so they are retried after a lost
    # connection (never the call), and each can tell whether an earlier try went through.

    def _attempt_row(self, call: ProviderCall, fields: dict[str, Any]) -> ExecutionAttempt:
        return ExecutionAttempt.objects.create(
            execution_id=self.claim.execution_id,
            run=self.claim.run,
            position=self.position,
            provider=call.provider,
            pool=call.pool,
            started_at=call.started_at,
            duration_s=call.duration_s,
            **fields,
        )

    def _attempt_written(self) -> bool:
        return ExecutionAttempt.objects.filter(
            execution_id=self.claim.execution_id, run=self.claim.run, position=self.position
        ).exists()

    def attempt(self, call: ProviderCall, **fields: Any) -> None:
        tries = 0

        def write() -> None:
            nonlocal tries
            tries += 1
            try:
                self._attempt_row(call, fields)
            except IntegrityError:
                # Only this run writes its positions: the earlier try was committed.
                if tries == 1:
                    raise

        db_retry(write)
        self._attempt_recorded(call, fields)

    def _attempt_recorded(self, call: ProviderCall, fields: dict[str, Any]) -> None:
        self.position += 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        if fields.get("cause"):
            self.causes.append(fields["cause"])
        if self.execution is not None:
            version = self.execution.signature_version
            send_attempt_finished(
                AttemptOutcome(
                    execution_id=str(self.claim.execution_id),
                    signature=version.signature.name,
                    version=version.number,
                    provider=call.provider.name,
                    pool=call.pool.name if call.pool is not None else None,
                    outcome=fields["outcome"],
                    error_code=fields.get("error_code", ""),
                    duration_s=call.duration_s,
                )
            )

    def succeed(self, call: ProviderCall, *, attempt: dict[str, Any], **fields: Any) -> bool:
        """Record the answering attempt and the execution's success in one transaction.

        Written apart, a worker killed between the two leaves a running execution whose
        answer is already recorded; the reaper would then run it again and call the provider
        a second time."""
        moment = self.now()
        execution_time_s = time.perf_counter() - self.started
        tries = 0

        def write() -> bool:
            nonlocal tries
            tries += 1
            ours = Execution.objects.filter(id=self.claim.execution_id, attempts=self.claim.run)
            if tries > 1 and self._attempt_written():
                # The earlier try committed; only its answer was lost with the connection.
                return ours.filter(status=fields["status"], finished_at=moment).exists()
            with transaction.atomic():
                # The attempt is kept even when the run was taken away: the call was made.
                self._attempt_row(call, attempt)
                return bool(
                    ours.filter(status=Execution.Status.RUNNING).update(
                        finished_at=moment, execution_time_s=execution_time_s, **fields
                    )
                )

        finished = db_retry(write)
        self._attempt_recorded(call, attempt)
        self._finished(finished, moment=moment, execution_time_s=execution_time_s, fields=fields)
        return finished

    def spent(self) -> dict[str, int]:
        """The tokens of every call of this run, for a run that ends without an answer."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}

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

        finished = bool(db_retry(write))
        self._finished(finished, moment=moment, execution_time_s=execution_time_s, fields=fields)
        return finished

    def _finished(
        self, finished: bool, *, moment: datetime, execution_time_s: float, fields: dict[str, Any]
    ) -> None:
        if not finished:
            logger.warning(
                "Execution %s run %s finished after it was taken away from this worker; "
                "its outcome was discarded.",
                self.claim.execution_id,
                self.claim.run,
            )
        elif self.execution is not None:
            send_execution_finished(
                execution_outcome(
                    self.execution,
                    # Providers tried after the requested one: each attempt is one provider.
                    fallback_hops=max(self.position - 1, 0),
                    finished_at=moment,
                    execution_time_s=execution_time_s,
                    **fields,
                )
            )


def _load_query(execution_id: uuid.UUID) -> Execution:
    return Execution.objects.select_related(
        "signature_version__signature", "requested_provider"
    ).get(id=execution_id)


def execution_load(*, claim: Claim) -> Execution:
    """The claimed execution with what running it reads (its version, its provider)."""
    return db_retry(lambda: _load_query(claim.execution_id))


def execution_process(
    *, claim: Claim, execution: Execution | None = None, now: Clock = timezone.now
) -> str:
    """Run a claimed execution (`execution`, when the caller loaded it already): each provider
    of the requested provider's fallback chain in turn, skipping those whose breaker is open
    and moving on after a counted failure, until one answers. Returns the final status."""
    run = _Run(claim=claim, now=now)
    loaded = execution

    def load() -> tuple[Execution, dspy.Module, list[Provider]]:
        execution = loaded if loaded is not None else _load_query(claim.execution_id)
        program = signature_version_program(version=execution.signature_version)
        return execution, program, provider_fallback_chain(provider=execution.requested_provider)

    try:
        execution, program, chain = db_retry(load)
        run.execution = execution
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
            error_cause=FailureCause.INTERNAL,
            **run.spent(),
            **error_fields(
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
        error_cause=execution_root_cause(run.causes),
        **run.spent(),
        **error_fields(
            error_type="ProvidersExhausted",
            code="providers_timed_out" if run.only_timeouts else "providers_exhausted",
            message="Every provider in the fallback chain failed: " + "; ".join(run.failures),
        ),
    )
    return status


def _try_provider(
    run: _Run, execution: Execution, program: dspy.Module, provider: Provider
) -> str | None:
    """One provider's turn: the final status, or None to go on to the next provider.

    A pool's turn lasts while its members do: after a member's counted failure the pool is
    called again without it, so a request moves to the pool's fallbacks only once no member
    can take it (each member's call is an attempt of its own)."""
    failed_members: list[int] = []
    while True:
        call = provider_call(
            provider=provider,
            program=program,
            inputs=execution.inputs,
            config=execution.config,
            now=run.now,
            keep_trace=execution.keep_trace,
            exclude_members=failed_members,
        )
        if call.refused and failed_members:
            # Every member left failed this request already: each has its attempt.
            return None
        status = _record_call(run, execution, call)
        if status is not None or call.pool is None or not call.counted_by_breaker:
            return status
        failed_members.append(call.provider.pk)


def _record_call(run: _Run, execution: Execution, call: ProviderCall) -> str | None:
    """Record one call of the chain as an attempt: the final status, or None to go on."""
    provider = call.provider
    if call.refused:
        run.attempt(
            call,
            outcome=ExecutionAttempt.Outcome.REJECTED,
            cause=attempt_cause(call),
            breaker_state=call.breaker_state,
            **error_fields(
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
        fields = error_fields(
            error_type=type(error).__name__, code=call.error_code, message=call.public_message
        )
        cause = attempt_cause(call)
        run.attempt(
            call,
            outcome=ExecutionAttempt.Outcome.FAILED,
            counted_by_breaker=call.counted_by_breaker,
            error_detail=call.detail,
            cause=cause,
            breaker_state=call.breaker_state,
            # The prompt quotes the inputs, so it is kept only where they may be shown.
            prompt=call.prompt if settings.EXECUTIONS_FAILURE_LOG_INPUTS else "",
            raw_output=call.raw_output,
            traceback=call.traceback,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            **fields,
        )
        if not call.counted_by_breaker:
            # The request itself is at fault (or the provider refuses it outright): another
            # provider would not do better, so the execution fails here.
            run.finish(status=Execution.Status.FAILED, error_cause=cause, **run.spent(), **fields)
            return Execution.Status.FAILED
        run.failures.append(f"{provider.name}: {type(error).__name__}: {call.public_message}")
        run.only_timeouts = run.only_timeouts and isinstance(
            error, dspy.LMTimeoutError | TimeoutError
        )
        return None
    result = call.result
    run.succeed(
        call,
        attempt={
            "outcome": ExecutionAttempt.Outcome.SUCCEEDED,
            "breaker_state": call.breaker_state,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            **(
                {"prompt": call.prompt, "raw_output": call.raw_output}
                if execution.keep_trace
                else {}
            ),
        },
        status=Execution.Status.SUCCEEDED,
        # The member that answered, for a pool.
        provider=provider,
        outputs=_jsonable(result.outputs),
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        memory_mb=result.peak_memory_mb,
        error_type="",
        error_code="",
        error_message="",
        error_cause="",
    )
    return Execution.Status.SUCCEEDED
