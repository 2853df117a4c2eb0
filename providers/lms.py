"""Each provider's `dspy.LM` and adapter, built once per process, and local model warm-up."""

import threading

import dspy

from core import env
from core.secrets import key_variable_problem
from providers.adapters import CompactAdapter
from providers.engines import EngineConfig, MLXEngine, OpenAICompatibleLM, engine_class_import
from providers.models import PROVIDER_FIELDS, Provider

# A local model whose weights are smaller than this cannot follow DSPy's long chat prompts
# (measured: SmolLM2-135M never produced parseable ChatAdapter output), so `auto` gives it
# the compact adapter.
COMPACT_ADAPTER_MAX_WEIGHTS_BYTES = 2 * 1024**3


def provider_engine_config(*, provider: Provider) -> EngineConfig:
    return EngineConfig(
        name=provider.name,
        kind=provider.kind,
        model=provider.model,
        max_tokens=provider.max_tokens,
        temperature=provider.temperature,
        top_p=provider.top_p,
        timeout_s=provider.timeout_s,
        hardware_optimization=provider.hardware_optimization,
        model_path=str(provider.model_path()) if provider.kind == Provider.Kind.MLX else "",
        base_url=provider.base_url,
        api_key_env=provider.api_key_env,
    )


_lm_cache: dict[int, tuple[tuple, dspy.LM]] = {}
_lm_cache_lock = threading.Lock()


def provider_api_key(*, provider: Provider) -> str | None:
    """The value of the provider's key variable, or None when it names none or it is unset.

    Whatever the row says, a variable the rules refuse (`core.secrets.key_variable_problem`)
    is read only to scrub it from error text, never sent: see `_api_key`.
    """
    return env.get_secret(provider.api_key_env) if provider.api_key_env else None


def provider_api_key_configured(*, provider: Provider) -> bool | None:
    """Whether the provider has a key it may use: its variable is allowed and set (None when
    it names no variable)."""
    if not provider.api_key_env:
        return None
    return key_variable_problem(provider.api_key_env) is None and bool(
        provider_api_key(provider=provider)
    )


def _api_key(provider: Provider) -> str:
    if not provider.api_key_env:
        # The OpenAI client refuses to send a request without a key; endpoints without
        # authentication (such as mlx_lm.server) ignore whatever is sent.
        return "no-key"
    # A row stored before the rule existed (or written past the services) must not send a
    # server variable, say DATABASE_URL, to the provider's endpoint.
    problem = key_variable_problem(provider.api_key_env)
    if problem:
        raise dspy.LMAuthError(
            f"The API key variable of provider {provider.name!r} is refused: {problem}",
            model=provider.model,
            provider=provider.name,
        )
    key = provider_api_key(provider=provider)
    if not key:
        raise dspy.LMAuthError(
            f"The environment variable {provider.api_key_env!r} holding the API key of provider "
            f"{provider.name!r} is not set.",
            model=provider.model,
            provider=provider.name,
        )
    return key


def _new_lm(provider: Provider, api_key: str | None) -> dspy.LM:
    defaults = {
        "temperature": provider.temperature,
        "max_tokens": provider.max_tokens,
        "top_p": provider.top_p,
        # The dspy.LM layer would retry and cache; executions own attempts (breakers,
        # fallbacks) and every execution must really run.
        "num_retries": 0,
        "cache": False,
    }
    if provider.kind == Provider.Kind.OPENAI:
        return OpenAICompatibleLM(
            f"openai/{provider.model}",
            api_base=provider.base_url,
            api_key=api_key,
            timeout=provider.timeout_s,
            **defaults,
        )
    config = provider_engine_config(provider=provider)
    if provider.kind == Provider.Kind.MLX:
        engine = MLXEngine(config=config)
    else:
        engine = engine_class_import(provider.engine_path)(config=config)
    return dspy.LM(f"{provider.kind}/{provider.name}", engine=engine, **defaults)


def provider_build_lm(*, provider: Provider) -> dspy.LM:
    """The provider's `dspy.LM`, built once per process and rebuilt when its row changes."""
    api_key = _api_key(provider) if provider.kind == Provider.Kind.OPENAI else None
    fingerprint = (
        provider.updated_at,
        *(getattr(provider, field) for field in PROVIDER_FIELDS),
        api_key,
    )
    with _lm_cache_lock:
        cached = _lm_cache.get(provider.pk)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        lm = _new_lm(provider, api_key)
        _lm_cache[provider.pk] = (fingerprint, lm)
    return lm


def provider_weights_bytes(*, provider: Provider) -> int | None:
    """Size on disk of a local provider's weights, or None when it has no local directory."""
    if provider.kind != Provider.Kind.MLX:
        return None
    path = provider.model_path()
    if not path.is_dir():
        return None
    return sum(item.stat().st_size for item in path.glob("*.safetensors"))


def provider_adapter(*, provider: Provider) -> dspy.Adapter:
    choice = provider.adapter
    if choice == Provider.Adapter.AUTO:
        size = provider_weights_bytes(provider=provider)
        small = size is not None and size < COMPACT_ADAPTER_MAX_WEIGHTS_BYTES
        choice = Provider.Adapter.COMPACT if small else Provider.Adapter.CHAT
    if choice == Provider.Adapter.COMPACT:
        return CompactAdapter()
    if choice == Provider.Adapter.JSON:
        return dspy.JSONAdapter()
    return dspy.ChatAdapter()


def provider_warm_up(*, provider: Provider) -> float | None:
    """Load a local provider's model now, so that its first execution does not wait for it.

    Returns how long the load took in seconds, or None for a provider with nothing to load.
    Call it only in the process that will generate: MLX cannot run in a process forked from
    one that already ran it.
    """
    if provider.kind != Provider.Kind.MLX:
        return None
    from providers.mlx.runtime import load_model

    info = load_model(
        model_path=str(provider.model_path()), optimize=provider.hardware_optimization
    )
    return info.load_duration_s
