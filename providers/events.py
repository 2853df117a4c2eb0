"""What the providers app tells the rest of the service, without knowing who listens.

Monitoring sits above every app and counts these; the apps never import it. Each event carries
server-side names only (a provider's name, a breaker state, a model directory's name), never
request data, so whatever counts them has a bounded set of label values.

Sending needs no configured Django: with nobody connected (a benchmark driving the MLX runtime
directly) it does nothing.
"""

import logging
from dataclasses import dataclass

from django.dispatch import Signal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreakerStateChange:
    """A provider's circuit breaker changed state (committed)."""

    provider: str
    from_state: str
    to_state: str


@dataclass(frozen=True)
class LoadedModel:
    """A local model held by this process."""

    # The model directory's name (say "SmolLM2-135M-Instruct"): providers sharing a directory
    # share one loaded model.
    model: str
    # Bytes of the weights as loaded (after any de-quantisation).
    resident_bytes: int


@dataclass(frozen=True)
class ChatOutcome:
    """A chat completion of the OpenAI-compatible route (`providers.chat.provider_chat`) ended."""

    # The provider that answered, else the one the request named.
    provider: str
    requested_provider: str
    # succeeded, failed or refused (every breaker of the chain was open).
    outcome: str
    error_code: str
    duration_s: float
    input_tokens: int
    output_tokens: int


# Sent after the transaction that wrote the transition commits, with
# `change=BreakerStateChange`.
breaker_transitioned = Signal()
# Sent in the loading process once a model is ready, with `model=LoadedModel` and
# `load_duration_s`.
model_loaded = Signal()
# Sent in that process once the model is dropped, with `model=LoadedModel`.
model_unloaded = Signal()
# Sent in the web process once a chat completion has its answer or its error, with
# `outcome=ChatOutcome`.
chat_completed = Signal()


def _send(signal: Signal, name: str, **kwargs) -> None:
    # A listener's failure (a metric that cannot be written) must never fail a provider call,
    # a breaker update or a model load: it is logged and ignored.
    for receiver, response in signal.send_robust(sender=None, **kwargs):
        if isinstance(response, Exception):
            logger.error("Receiver %r of %s failed: %r", receiver, name, response)


def send_breaker_transitioned(change: BreakerStateChange) -> None:
    _send(breaker_transitioned, "breaker_transitioned", change=change)


def send_model_loaded(model: LoadedModel, *, load_duration_s: float) -> None:
    _send(model_loaded, "model_loaded", model=model, load_duration_s=load_duration_s)


def send_model_unloaded(model: LoadedModel) -> None:
    _send(model_unloaded, "model_unloaded", model=model)


def send_chat_completed(outcome: ChatOutcome) -> None:
    _send(chat_completed, "chat_completed", outcome=outcome)
