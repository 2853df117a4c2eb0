"""Creating executions: validate a request, write its row, enqueue it once committed; batches.

A retry with the same idempotency key and body returns the first execution; a lost database
connection is resolved by looking the row up by the id chosen before its insert.
"""

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from core.db import CONNECTION_ERRORS, REQUEST_RETRY, db_reconnect, db_retry
from core.errors import ApplicationError, DatabaseUnavailable, field_error
from core.generation import generation_settings_check
from executions.admission import execution_admit
from executions.exceptions import IdempotencyKeyReused, InvalidConfig
from executions.models import Execution
from executions.selectors import execution_client_scope, execution_wait_all
from executions.services.queue import execution_enqueue, execution_enqueue_on_commit
from providers.exceptions import ProviderDisabled
from providers.models import Provider
from providers.selectors import provider_get, provider_get_default
from registry.inputs import signature_version_validate_inputs
from registry.selectors import signature_version_resolve

logger = logging.getLogger(__name__)


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
                "max_tokens": field_error(
                    "out_of_range",
                    f"The signature version's lm_defaults ask for max_tokens="
                    f"{merged['max_tokens']}, above this server's limit of {limit}; "
                    f"pass config.max_tokens of at most {limit}.",
                )
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
    scope = execution_client_scope(api_key=api_key, user=user)
    if not idempotency_key or scope is None:
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
    rerun_of: Execution | None = None,
    keep_trace: bool = False,
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
            # A session's user; an API key's request has none (nor has an anonymous one).
            created_by=user if api_key is None and execution_client_scope(user=user) else None,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            batch_id=batch_id,
            rerun_of=rerun_of,
            keep_trace=keep_trace,
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
                execution_enqueue_on_commit(execution.id, chosen)
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
