"""The apps' events counted into the toolkit's Prometheus metrics, in the process that sent them.

Connected once, when the monitoring app is ready (`MonitoringConfig.ready`).
"""

from django.dispatch import receiver

from executions.signals import (
    AttemptOutcome,
    ExecutionOutcome,
    attempt_finished,
    execution_finished,
)
from monitoring import prometheus
from providers.events import (
    BreakerStateChange,
    ChatOutcome,
    LoadedModel,
    breaker_transitioned,
    chat_completed,
    model_loaded,
    model_unloaded,
)


def _version(number: int | None) -> str:
    return "" if number is None else str(number)


@receiver(execution_finished, dispatch_uid="monitoring.count_execution")
def count_execution(sender, *, outcome: ExecutionOutcome, **kwargs) -> None:
    labels = {
        "signature": outcome.signature,
        "version": _version(outcome.version),
        "provider": outcome.provider or outcome.requested_provider,
    }
    prometheus.executions_total.labels(**labels, status=outcome.status, cause=outcome.cause).inc()
    if outcome.duration_s is not None:
        prometheus.execution_duration_seconds.labels(**labels, status=outcome.status).observe(
            outcome.duration_s
        )
    if outcome.queue_wait_s is not None:
        prometheus.execution_queue_wait_seconds.labels(**labels).observe(outcome.queue_wait_s)
    for direction, tokens in (("input", outcome.input_tokens), ("output", outcome.output_tokens)):
        if tokens:
            prometheus.tokens_total.labels(**labels, direction=direction).inc(tokens)
    # Every finished execution has its series, so a rate of hops reads 0 rather than nothing.
    prometheus.fallback_hops_total.labels(
        signature=outcome.signature,
        version=_version(outcome.version),
        requested_provider=outcome.requested_provider,
    ).inc(outcome.fallback_hops)


@receiver(attempt_finished, dispatch_uid="monitoring.count_attempt")
def count_attempt(sender, *, outcome: AttemptOutcome, **kwargs) -> None:
    prometheus.provider_attempts_total.labels(
        signature=outcome.signature,
        version=_version(outcome.version),
        provider=outcome.provider,
        pool=outcome.pool or "",
        outcome=outcome.outcome,
        error_code=outcome.error_code,
    ).inc()
    prometheus.provider_attempt_duration_seconds.labels(
        provider=outcome.provider, pool=outcome.pool or "", outcome=outcome.outcome
    ).observe(outcome.duration_s)


@receiver(breaker_transitioned, dispatch_uid="monitoring.count_breaker_transition")
def count_breaker_transition(sender, *, change: BreakerStateChange, **kwargs) -> None:
    prometheus.breaker_transitions_total.labels(
        provider=change.provider, from_state=change.from_state, to_state=change.to_state
    ).inc()


@receiver(model_loaded, dispatch_uid="monitoring.count_model_load")
def count_model_load(sender, *, model: LoadedModel, load_duration_s: float, **kwargs) -> None:
    prometheus.model_load_seconds.labels(model=model.model).observe(load_duration_s)
    prometheus.model_resident_bytes.labels(model=model.model).inc(model.resident_bytes)


@receiver(model_unloaded, dispatch_uid="monitoring.count_model_unload")
def count_model_unload(sender, *, model: LoadedModel, **kwargs) -> None:
    prometheus.model_resident_bytes.labels(model=model.model).dec(model.resident_bytes)


@receiver(chat_completed, dispatch_uid="monitoring.count_chat_completion")
def count_chat_completion(sender, *, outcome: ChatOutcome, **kwargs) -> None:
    prometheus.chat_completions_total.labels(
        provider=outcome.provider, outcome=outcome.outcome, error_code=outcome.error_code
    ).inc()
    prometheus.chat_completion_duration_seconds.labels(
        provider=outcome.provider, outcome=outcome.outcome
    ).observe(outcome.duration_s)
    tokens = prometheus.chat_tokens_total
    for direction, count in (("input", outcome.input_tokens), ("output", outcome.output_tokens)):
        if count:
            tokens.labels(provider=outcome.provider, direction=direction).inc(count)
