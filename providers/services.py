"""Writes and runtime services of the providers app: validation, LMs, adapters, execution."""

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import ProtectedError

from providers.engines import (
    EngineConfig,
    MLXEngine,
    OpenAICompatibleLM,
    collect_generation_stats,
    engine_class_import,
    engine_contract_problems,
)
from providers.exceptions import ProviderInUse
from providers.models import Provider, ProviderFallback
from providers.selectors import DEFAULT_PROVIDER_NAME

# A local model whose weights are smaller than this cannot follow DSPy's long chat prompts
# (measured: SmolLM2-135M never produced parseable ChatAdapter output), so `auto` gives it
# the compact adapter.
COMPACT_ADAPTER_MAX_WEIGHTS_BYTES = 2 * 1024**3

# Path segments of the API that a provider name would shadow (/api/v1/providers/<name>/).
RESERVED_NAMES = frozenset({"hardware"})

PROVIDER_FIELDS = (
    "name",
    "kind",
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "hardware_optimization",
    "timeout_s",
    "base_url",
    "api_key_env",
    "engine_path",
    "adapter",
    "enabled",
)


@dataclass(frozen=True)
class ProviderResult:
    outputs: dict[str, Any]
    input_tokens: int
    output_tokens: int
    peak_memory_mb: float | None
    duration_s: float
    applied_optimizations: tuple[str, ...]


# Validation ----------------------------------------------------------------------------------


def provider_config_errors(*, provider: Provider) -> dict[str, list[str]]:
    """Field-level problems of a provider's kind-specific settings (empty when valid)."""
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if provider.name in RESERVED_NAMES:
        add("name", f"{provider.name!r} is reserved by the API; choose another name.")
    if provider.kind not in Provider.Kind.values:
        add(
            "kind",
            f"Unknown kind {provider.kind!r}; choose one of {', '.join(Provider.Kind.values)}.",
        )
        return errors
    if provider.adapter not in Provider.Adapter.values:
        add("adapter", f"Unknown adapter {provider.adapter!r}.")
    if not provider.model:
        add("model", "This field is required.")
    elif provider.kind == Provider.Kind.MLX:
        path = provider.model_path()
        if not path.is_dir():
            add("model", f"The model directory {str(path)!r} does not exist or is not reachable.")
        elif not (path / "config.json").is_file():
            add("model", f"{str(path)!r} is not an MLX model directory (no config.json).")
    if provider.kind == Provider.Kind.OPENAI:
        if not provider.base_url:
            add("base_url", "An openai provider needs the base URL of its endpoint.")
        if provider.api_key_env and not os.environ.get(provider.api_key_env):
            add(
                "api_key_env",
                f"The environment variable {provider.api_key_env!r} is not set in this process.",
            )
    if provider.kind == Provider.Kind.CUSTOM:
        if not provider.engine_path:
            add("engine_path", "A custom provider needs the dotted path of its engine class.")
        else:
            try:
                engine_class = engine_class_import(provider.engine_path)
            except Exception as exc:
                # Any import-time failure of operator-supplied code is a configuration error.
                add("engine_path", f"{provider.engine_path!r} cannot be imported: {exc}")
            else:
                problems = engine_contract_problems(engine_class)
                if problems:
                    add(
                        "engine_path",
                        f"{provider.engine_path!r} does not follow the engine contract: "
                        + "; ".join(problems)
                        + ".",
                    )
    return errors


def provider_fallback_errors(*, provider: Provider, fallbacks: list[Provider]) -> list[str]:
    """Why `fallbacks` cannot be the provider's fallback list (empty when it can)."""
    errors = []
    seen: set[int] = set()
    for fallback in fallbacks:
        if fallback.pk is not None and fallback.pk == provider.pk:
            errors.append(f"{provider.name!r} cannot fall back to itself.")
        elif fallback.pk in seen:
            errors.append(f"{fallback.name!r} appears twice in the fallback list.")
        seen.add(fallback.pk)
    if provider.pk is None or errors:
        return errors
    for fallback in fallbacks:
        cycle = _path_to(start=fallback, target=provider)
        if cycle:
            route = " -> ".join([provider.name, *(item.name for item in cycle)])
            errors.append(f"Falling back to {fallback.name!r} makes a cycle: {route}.")
    return errors


def _path_to(*, start: Provider, target: Provider) -> list[Provider]:
    """A fallback path from `start` to `target` through stored links, or [] when none exists."""
    parents: dict[int, Provider | None] = {start.pk: None}
    by_pk = {start.pk: start}
    frontier = [start.pk]
    while frontier:
        links = ProviderFallback.objects.filter(provider_id__in=frontier).select_related("fallback")
        frontier = []
        for link in links:
            if link.fallback_id in parents:
                continue
            parents[link.fallback_id] = by_pk[link.provider_id]
            by_pk[link.fallback_id] = link.fallback
            if link.fallback_id == target.pk:
                path = [link.fallback]
                node = by_pk[link.provider_id]
                while node is not None:
                    path.append(node)
                    node = parents[node.pk]
                return list(reversed(path))
            frontier.append(link.fallback_id)
    return []


# Writes --------------------------------------------------------------------------------------


@transaction.atomic
def provider_create(*, fallbacks: list[Provider] | None = None, **fields: Any) -> Provider:
    unknown = set(fields) - set(PROVIDER_FIELDS)
    if unknown:
        raise TypeError(f"Unknown provider fields: {sorted(unknown)}")
    provider = Provider(**fields)
    provider.full_clean()
    provider.save()
    if fallbacks:
        provider_set_fallbacks(provider=provider, fallbacks=fallbacks)
    return provider


@transaction.atomic
def provider_update(
    *, provider: Provider, data: dict[str, Any], fallbacks: list[Provider] | None = None
) -> Provider:
    """Apply `data` (and a new fallback list when given); nothing is kept unless all is valid.

    The fallback list is validated by `provider_set_fallbacks`, under the provider's row lock;
    when it is refused, the transaction takes the row's changes back too.
    """
    unknown = set(data) - set(PROVIDER_FIELDS)
    if unknown:
        raise TypeError(f"Unknown provider fields: {sorted(unknown)}")
    for field, value in data.items():
        setattr(provider, field, value)
    provider.full_clean()
    provider.save()
    if fallbacks is not None:
        provider_set_fallbacks(provider=provider, fallbacks=fallbacks)
    return provider


def _lock_fallback_graph() -> None:
    """Take the lock that serialises every change of the fallback graph, until commit.

    A cycle check must see every link that could close a cycle with this edit, and row locks
    cannot promise that: edits of unrelated providers (a -> b beside c -> d, with b -> c and
    d -> a stored) each see no cycle and together make one. SQLite serialises writers itself.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('providers.fallback_graph'))")


@transaction.atomic
def provider_set_fallbacks(*, provider: Provider, fallbacks: list[Provider]) -> None:
    """Replace the provider's ordered fallback list (first entry tried first)."""
    # The provider's row before the graph lock, as every edit of the provider takes them (a
    # saved form or provider_update holds the row already), so two edits cannot deadlock.
    # NO KEY UPDATE: an edit holding the graph lock may add a link to this provider, which
    # needs only a key-share lock on its row.
    Provider.objects.select_for_update(no_key=True).filter(pk=provider.pk).first()
    _lock_fallback_graph()
    errors = provider_fallback_errors(provider=provider, fallbacks=fallbacks)
    if errors:
        raise ValidationError({"fallbacks": errors})
    ProviderFallback.objects.filter(provider=provider).delete()
    ProviderFallback.objects.bulk_create(
        ProviderFallback(provider=provider, fallback=fallback, position=position)
        for position, fallback in enumerate(fallbacks)
    )
    # The row's updated_at marks a configuration change (cached LMs compare it).
    provider.save(update_fields=["updated_at"])


@transaction.atomic
def provider_delete(*, provider: Provider) -> None:
    """Delete a provider (and the fallback links to and from it) unless records point at it."""
    try:
        provider.delete()
    except ProtectedError as exc:
        raise ProviderInUse(provider.name) from exc


@transaction.atomic
def provider_ensure_default(*, model_path: Path) -> Provider:
    """Register (or point at `model_path`) the default local provider `local-default`."""
    provider = Provider.objects.select_for_update().filter(name=DEFAULT_PROVIDER_NAME).first()
    if provider is None:
        return provider_create(
            name=DEFAULT_PROVIDER_NAME,
            kind=Provider.Kind.MLX,
            model=str(model_path),
            max_tokens=64,
            temperature=0.0,
            timeout_s=120.0,
        )
    changes = {"model": str(model_path), "kind": Provider.Kind.MLX}
    if any(getattr(provider, field) != value for field, value in changes.items()):
        provider = provider_update(provider=provider, data=changes)
    return provider


# Runtime -------------------------------------------------------------------------------------


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


def _api_key(provider: Provider) -> str:
    if not provider.api_key_env:
        # The OpenAI client refuses to send a request without a key; endpoints without
        # authentication (such as mlx_lm.server) ignore whatever is sent.
        return "no-key"
    key = os.environ.get(provider.api_key_env)
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
    from providers.adapters import CompactAdapter

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


CALL_OVERRIDES = ("temperature", "max_tokens", "top_p", "stop")


def provider_execute(
    *,
    provider: Provider,
    program: dspy.Module,
    inputs: dict[str, Any],
    config: dict[str, Any] | None = None,
) -> ProviderResult:
    """Run `program` on `inputs` with the provider's LM and adapter, in this thread's context.

    DSPy's `LMError` family and `AdapterParseError` propagate unchanged.
    """
    overrides = {key: value for key, value in (config or {}).items() if key in CALL_OVERRIDES}
    unknown = set(config or {}) - set(CALL_OVERRIDES)
    if unknown:
        raise ValueError(f"Unknown generation settings: {sorted(unknown)}")
    if "stop" in overrides and isinstance(overrides["stop"], str):
        overrides["stop"] = [overrides["stop"]]
    # A copy per call: its own history and settings, sharing the engine and loaded model.
    lm = provider_build_lm(provider=provider).copy(**overrides)
    adapter = provider_adapter(provider=provider)
    started = time.perf_counter()
    with (
        dspy.context(lm=lm, adapter=adapter),
        dspy.track_usage() as usage,
        collect_generation_stats() as stats,
    ):
        prediction = program(**inputs)
    duration_s = time.perf_counter() - started
    input_tokens = output_tokens = 0
    for entry in usage.get_total_tokens().values():
        input_tokens += entry.get("prompt_tokens") or 0
        output_tokens += entry.get("completion_tokens") or 0
    peaks = [item.peak_memory_mb for item in stats if item.peak_memory_mb is not None]
    applied: list[str] = []
    for item in stats:
        applied.extend(name for name in item.applied_optimizations if name not in applied)
    return ProviderResult(
        outputs=dict(prediction.items()),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        peak_memory_mb=max(peaks) if peaks else None,
        duration_s=duration_s,
        applied_optimizations=tuple(applied),
    )
