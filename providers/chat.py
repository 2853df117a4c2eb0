"""Chat completions on a provider, for the OpenAI-compatible route: a DSPy program written in
code uses a provider of the toolkit (its breakers, fallbacks, metrics, local models) as its LM.

The request's messages go to the provider's `dspy.LM` as they are, no signature and no
adapter, through `provider_call`, the one guarded call: each provider of the fallback chain
in turn is asked through its breaker, and each outcome counts towards that breaker as an
execution's call does. A local model's call runs in the inference cluster (the web process
never loads a model); every other provider is called here and now.
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dspy
from django.conf import settings
from django.utils import timezone
from django_q.models import Task
from django_q.tasks import async_task, result

from core.errors import ApplicationError
from core.generation import generation_settings_check
from providers.calls import Clock, ProviderCall, provider_call, provider_route
from providers.events import ChatOutcome, send_chat_completed
from providers.exceptions import (
    ChatCircuitOpen,
    ChatInvalidConfig,
    ChatProvidersExhausted,
    ChatProvidersTimedOut,
    ChatRequestRejected,
    ProviderDisabled,
)
from providers.models import Provider
from providers.selectors import provider_fallback_chain, provider_get

logger = logging.getLogger(__name__)

CHAT_ROLES = ("system", "user", "assistant")
FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class ChatAttempt:
    """One provider's turn, in plain values: it comes back from an inference worker as a task
    result. Texts are the toolkit's (`public_message`) or scrubbed (`content`)."""

    provider: str
    succeeded: bool = False
    refused: bool = False
    # Whether the failure says the provider is unhealthy, so that the next one may do better.
    counted_by_breaker: bool = False
    timed_out: bool = False
    # The provider refused the request itself (`ChatRequestRejected`).
    request_rejected: bool = False
    content: str = ""
    finish_reason: str = "stop"
    input_tokens: int = 0
    output_tokens: int = 0
    public_message: str = ""


@dataclass(frozen=True)
class ChatCompletion:
    """The answer of a chat completion: the provider that gave it, its text and tokens."""

    provider: str
    content: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    created_at: datetime


def _finish_reason(lm: dspy.LM) -> str:
    # DSPy hands back only the text; the response in its history says why generation stopped
    # (an engine's `dspy.lm15.Response`, or an OpenAI-shaped one from a remote endpoint).
    if not lm.history:
        return "stop"
    response = lm.history[-1].get("response")
    if isinstance(response, list | tuple):
        response = response[0] if response else None
    reason = getattr(response, "finish_reason", None)
    if reason is None:
        choices = getattr(response, "choices", None) or []
        reason = getattr(choices[0], "finish_reason", None) if choices else None
    return "length" if reason == "length" else "stop"


class ChatProgram(dspy.Module):
    """Sends the messages as they are to the LM of the context (`provider_execute` sets the
    provider's): no signature, so no adapter formats or parses anything."""

    def forward(self, messages: list[dict[str, str]]) -> dspy.Prediction:
        lm = dspy.settings.lm
        outputs = lm(messages=messages)
        output = outputs[0] if outputs else ""
        text = output.get("text") if isinstance(output, dict) else output
        return dspy.Prediction(content=text or "", finish_reason=_finish_reason(lm))


def _attempt(call: ProviderCall) -> ChatAttempt:
    name = call.provider.name
    if call.refused:
        return ChatAttempt(provider=name, refused=True, public_message=call.public_message)
    if call.error is not None:
        # What the provider said, scrubbed, for the operator: no execution row keeps it here.
        logger.warning("Chat completion on provider %s failed: %s", name, call.detail)
        return ChatAttempt(
            provider=name,
            counted_by_breaker=call.counted_by_breaker,
            timed_out=isinstance(call.error, dspy.LMTimeoutError | TimeoutError),
            request_rejected=isinstance(call.error, dspy.LMInvalidRequestError),
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            public_message=call.public_message,
        )
    outputs = call.result.outputs
    return ChatAttempt(
        provider=name,
        succeeded=True,
        content=str(outputs["content"]),
        finish_reason=outputs["finish_reason"],
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
    )


def provider_chat_attempt(
    *,
    provider: Provider,
    messages: list[dict[str, str]],
    config: dict[str, Any],
    now: Clock = timezone.now,
) -> ChatAttempt:
    """One guarded call of the provider with the messages, in this process. A pool tries its
    other members after a member's counted failure, as an execution does, and answers with the
    last failure when none is left."""
    failed_members: list[int] = []
    last: ProviderCall | None = None
    while True:
        call = provider_call(
            provider=provider,
            program=ChatProgram(),
            inputs={"messages": messages},
            config=config,
            now=now,
            exclude_members=failed_members,
        )
        if call.refused and last is not None:
            return _attempt(last)
        if call.pool is None or call.succeeded or not call.counted_by_breaker:
            return _attempt(call)
        failed_members.append(call.provider.pk)
        last = call


def provider_chat_task(
    provider_id: int, messages: list[dict[str, str]], config: dict[str, Any]
) -> ChatAttempt:
    """The django-q2 task behind a local provider's turn (`provider_chat_attempt_where_it_runs`)."""
    return provider_chat_attempt(
        provider=Provider.objects.get(pk=provider_id), messages=messages, config=config
    )


def provider_chat_attempt_where_it_runs(
    *,
    provider: Provider,
    messages: list[dict[str, str]],
    config: dict[str, Any],
    now: Clock = timezone.now,
) -> ChatAttempt:
    """The provider's turn where its executions run: a local model's in the inference cluster
    (loading it into a web process would cost that process the model's memory for good),
    waited for up to its timeout plus `PROVIDERS_CHAT_QUEUE_WAIT_S`; any other here."""
    cluster = provider_route(provider=provider).cluster
    if cluster is None:
        return provider_chat_attempt(provider=provider, messages=messages, config=config, now=now)
    wait_s = provider.timeout_s + settings.PROVIDERS_CHAT_QUEUE_WAIT_S
    task_id = async_task(
        "providers.chat.provider_chat_task",
        provider.pk,
        messages,
        config,
        q_options={"cluster": cluster, "task_name": f"chat-{provider.name}"},
    )
    found = result(task_id, wait=int(wait_s * 1000))
    if found is not None:
        # The saved task would keep the conversation (its arguments) and the answer (its
        # result): the route records no execution, so it keeps no copy there either.
        Task.objects.filter(id=task_id).delete()
    if isinstance(found, ChatAttempt):
        return found
    if found is None:
        return ChatAttempt(
            provider=provider.name,
            counted_by_breaker=True,
            timed_out=True,
            public_message=(
                f"The {cluster!r} cluster did not answer for the provider {provider.name} "
                f"within {wait_s:g} s."
            ),
        )
    # A failed task's result is its traceback: for the log, never for the client.
    logger.error("The chat task of provider %s failed: %s", provider.name, found)
    return ChatAttempt(
        provider=provider.name,
        counted_by_breaker=True,
        public_message=f"The worker running the provider {provider.name} failed.",
    )


def chat_config_check(config: dict[str, Any]) -> dict[str, Any]:
    """The request's generation settings, normalised, or an `invalid_config` error: the same
    bounds as an execution's (`EXECUTIONS_MAX_TOKENS_LIMIT` included)."""
    normalized, errors = generation_settings_check(
        config, max_tokens_limit=settings.EXECUTIONS_MAX_TOKENS_LIMIT
    )
    if errors:
        raise ChatInvalidConfig(errors)
    return normalized


def _failure(attempts: list[ChatAttempt]) -> ApplicationError:
    made = [attempt for attempt in attempts if not attempt.refused]
    summary = " ".join(attempt.public_message for attempt in attempts)
    if not made:
        return ChatCircuitOpen(f"No provider is taking calls: {summary}")
    last = made[-1]
    if last.request_rejected:
        return ChatRequestRejected(last.public_message)
    if all(attempt.timed_out for attempt in made):
        return ChatProvidersTimedOut(f"No provider answered in time: {summary}")
    return ChatProvidersExhausted(f"No provider could answer: {summary}")


def _outcome(failure: ApplicationError | None) -> str:
    if failure is None:
        return "succeeded"
    return "refused" if isinstance(failure, ChatCircuitOpen) else "failed"


def provider_chat(
    *,
    model: str,
    messages: list[dict[str, str]],
    config: dict[str, Any] | None = None,
    now: Clock = timezone.now,
) -> ChatCompletion:
    """A chat completion on the provider named `model`: each provider of its fallback chain in
    turn, skipping those whose breaker is open and moving on after a counted failure (as an
    execution does), until one answers. Raises `provider_not_found`, `provider_disabled`,
    `invalid_config`, or a `ChatError` / `ChatRequestRejected` when none answered."""
    requested = provider_get(name=model)
    if not requested.enabled:
        raise ProviderDisabled(requested.name)
    config = chat_config_check(config or {})
    started = time.perf_counter()
    attempts: list[ChatAttempt] = []
    for provider in provider_fallback_chain(provider=requested):
        attempt = provider_chat_attempt_where_it_runs(
            provider=provider, messages=messages, config=config, now=now
        )
        attempts.append(attempt)
        if attempt.succeeded or not (attempt.refused or attempt.counted_by_breaker):
            break
    last = attempts[-1]
    failure = None if last.succeeded else _failure(attempts)
    send_chat_completed(
        ChatOutcome(
            provider=last.provider if last.succeeded else requested.name,
            requested_provider=requested.name,
            outcome=_outcome(failure),
            error_code="" if failure is None else failure.code,
            duration_s=time.perf_counter() - started,
            input_tokens=sum(attempt.input_tokens for attempt in attempts),
            output_tokens=sum(attempt.output_tokens for attempt in attempts),
        )
    )
    if failure is not None:
        raise failure
    return ChatCompletion(
        provider=last.provider,
        content=last.content,
        finish_reason=last.finish_reason,
        input_tokens=last.input_tokens,
        output_tokens=last.output_tokens,
        created_at=now(),
    )
