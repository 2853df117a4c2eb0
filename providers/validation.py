"""Validation of provider configurations, below the models (the model's `clean`, the services,
the admin and the system checks all use it, and it imports no model).
"""

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from core import env
from core.secrets import key_variable_problem
from providers.choices import PoolPolicy, ProviderAdapter, ProviderKind
from providers.engines import engine_class_import, engine_contract_problems

# Path segments of the API that a provider name would shadow (/api/v1/providers/<name>/).
RESERVED_NAMES = frozenset({"hardware", "available"})

PROVIDER_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    "Use letters, digits, '.', '_' and '-', starting with a letter or digit.",
    code="invalid_name",
)
ENV_VAR_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]*$",
    "Enter the NAME of an environment variable (letters, digits, '_'), not its value.",
    code="invalid_env_var_name",
)


def validate_base_url(value: str) -> None:
    """An http(s) URL with a host; single-label hosts (`http://mlx-server:8080/v1`) are fine."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            "Enter an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/v1.",
            code="invalid_base_url",
        )


# The settings of a call that a pool leaves to its members.
POOL_UNUSED_FIELDS = ("model", "base_url", "api_key_env", "engine_path")


def provider_pool_member_errors(*, pool: Any, members: list[Any], routes: list[Any]) -> list[str]:
    """Why `members` (providers, in order) cannot be the pool's members, given each one's
    `provider_route` in `routes` (empty when they can). A pool's calls are routed once, before
    a member is picked, so every member must run where the others do."""
    errors = []
    seen: set[int] = set()
    if pool.kind != ProviderKind.POOL and members:
        errors.append(f"{pool.name!r} is not a pool (kind {pool.kind!r}): it has no members.")
    for member in members:
        if member.pk is not None and member.pk == pool.pk:
            errors.append(f"{pool.name!r} cannot be a member of itself.")
        elif member.kind == ProviderKind.POOL:
            errors.append(f"{member.name!r} is a pool: a pool's members are not pools.")
        elif member.pk in seen:
            errors.append(f"{member.name!r} appears twice among the members.")
        seen.add(member.pk)
    if len(set(routes)) > 1:
        where = ", ".join(
            f"{member.name} ({route.cluster or 'default cluster'})"
            for member, route in zip(members, routes, strict=True)
        )
        errors.append(f"A pool's members must all run in the same cluster: {where}.")
    return errors


def provider_config_errors(*, provider: Any) -> dict[str, list[str]]:
    """Field-level problems of a provider's kind-specific settings (empty when valid).

    `provider` is a `Provider` (not imported, not even for the annotation: this module sits
    below the models)."""
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if provider.name in RESERVED_NAMES:
        add("name", f"{provider.name!r} is reserved by the API; choose another name.")
    if provider.kind not in ProviderKind.values:
        add(
            "kind",
            f"Unknown kind {provider.kind!r}; choose one of {', '.join(ProviderKind.values)}.",
        )
        return errors
    if provider.adapter not in ProviderAdapter.values:
        add("adapter", f"Unknown adapter {provider.adapter!r}.")
    if provider.policy not in PoolPolicy.values:
        add("policy", f"Unknown policy {provider.policy!r}.")
    if provider.kind == ProviderKind.POOL:
        # Its members make the calls: settings of its own would be silently ignored.
        for name in POOL_UNUSED_FIELDS:
            if getattr(provider, name):
                add(name, "A pool has none of its own: its members have theirs; leave it blank.")
        return errors
    if not provider.model:
        add("model", "This field is required.")
    elif provider.kind == ProviderKind.MLX:
        path = provider.model_path()
        try:
            is_dir, has_config = path.is_dir(), (path / "config.json").is_file()
        except OSError as exc:
            # A name the file system refuses outright (a component over 255 bytes, ...).
            add("model", f"{str(path)[:200]!r} is not a usable path: {exc.strerror}.")
        else:
            if not is_dir:
                add(
                    "model",
                    f"The model directory {str(path)!r} does not exist or is not reachable.",
                )
            elif not has_config:
                add("model", f"{str(path)!r} is not an MLX model directory (no config.json).")
    # Every kind: a custom engine receives the variable's name too. A malformed name is the
    # field validator's to report.
    key_problem = (
        provider.api_key_env
        and ENV_VAR_NAME_VALIDATOR.regex.search(provider.api_key_env)
        and key_variable_problem(provider.api_key_env)
    )
    if key_problem:
        add("api_key_env", key_problem)
    if provider.kind == ProviderKind.OPENAI:
        if not provider.base_url:
            add("base_url", "An openai provider needs the base URL of its endpoint.")
        if provider.api_key_env and not key_problem and not env.get_secret(provider.api_key_env):
            add(
                "api_key_env",
                f"The environment variable {provider.api_key_env!r} is not set in this process.",
            )
    if provider.kind == ProviderKind.CUSTOM:
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
