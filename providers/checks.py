"""System checks for provider configurations that would break at call time.

They read the providers table, so, like Django's own database checks, they run only when a
database is named: `manage.py check --database default` (and `migrate`, which names one).
They are warnings, not errors: a provider row is runtime data, and one provider whose key is
missing from an operator's shell must not block every management command. They skip quietly
when the database cannot be reached or has not been migrated yet.
"""

import os

from django.core.checks import Warning, register
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections


def _enabled_providers(alias: str) -> list:
    from providers.models import Provider

    try:
        if Provider._meta.db_table not in connections[alias].introspection.table_names():
            return []
        return list(Provider.objects.using(alias).filter(enabled=True).order_by("name"))
    except DatabaseError:
        return []


@register()
def check_providers(app_configs=None, databases=None, **kwargs) -> list[Warning]:
    # Imported here: the engine loader imports dspy, which commands that never run checks
    # should not pay for at startup.
    from providers.engines import engine_class_import, engine_contract_problems
    from providers.models import Provider

    if not databases or DEFAULT_DB_ALIAS not in databases:
        return []
    errors: list[Warning] = []
    for provider in _enabled_providers(DEFAULT_DB_ALIAS):
        if provider.kind == Provider.Kind.OPENAI:
            if provider.api_key_env and not os.environ.get(provider.api_key_env):
                errors.append(
                    Warning(
                        f"Provider {provider.name!r}: the environment variable "
                        f"{provider.api_key_env!r} holding its API key is not set.",
                        hint=f"Set {provider.api_key_env} for the web and worker processes, "
                        "or disable the provider.",
                        obj=provider,
                        id="providers.W001",
                    )
                )
            if not provider.base_url:
                errors.append(
                    Warning(
                        f"Provider {provider.name!r} has no base URL.",
                        hint="Set the endpoint's base URL, e.g. http://host:8080/v1.",
                        obj=provider,
                        id="providers.W003",
                    )
                )
        elif provider.kind == Provider.Kind.MLX:
            path = provider.model_path()
            if not (path / "config.json").is_file():
                errors.append(
                    Warning(
                        f"Provider {provider.name!r}: the model directory {str(path)!r} is "
                        "missing or is not an MLX model directory.",
                        hint="Run `manage.py providers_install_default_model` for the default "
                        "model, or point the provider at an existing directory.",
                        obj=provider,
                        id="providers.W002",
                    )
                )
        elif provider.kind == Provider.Kind.CUSTOM:
            try:
                problems = engine_contract_problems(engine_class_import(provider.engine_path))
            except Exception as exc:
                # Operator-supplied code may fail to import in any way.
                problems = [f"it cannot be imported ({exc})"]
            if problems:
                errors.append(
                    Warning(
                        f"Provider {provider.name!r}: the engine {provider.engine_path!r} is "
                        f"not usable: {'; '.join(problems)}.",
                        hint="Fix the dotted path or the engine class.",
                        obj=provider,
                        id="providers.W004",
                    )
                )
    return errors
