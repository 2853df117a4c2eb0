"""System checks for provider configurations that would break at call time.

They read the providers table, so, like Django's own database checks, they run only when a
database is named: `manage.py check --database default` (and `migrate`, which names one).
They are warnings, not errors: a provider row is runtime data, and one provider whose key is
missing from an operator's shell must not block every management command. They skip quietly
when the database cannot be reached or has not been migrated yet.
"""

from django.core.checks import Warning, register
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from providers.models import Provider
from providers.validation import provider_config_errors


def _enabled_providers(alias: str) -> list:
    try:
        if Provider._meta.db_table not in connections[alias].introspection.table_names():
            return []
        return list(Provider.objects.using(alias).filter(enabled=True).order_by("name"))
    except DatabaseError:
        return []


# The kind-specific settings that break a provider at call time, as stable check ids. The
# conditions are the model's validation (`provider_config_errors`), so the two cannot drift.
CHECKED_FIELDS = {
    ("openai", "api_key_env"): (
        "providers.W001",
        "Name a variable that PROVIDERS_KEY_ENV_PATTERN (or PROVIDERS_KEY_ENV_ALLOWED) admits "
        "and set it for the web and worker processes, or disable the provider.",
    ),
    ("mlx", "model"): (
        "providers.W002",
        "Run `manage.py providers_install_default_model` for the default model, or point the "
        "provider at an existing directory.",
    ),
    ("openai", "base_url"): (
        "providers.W003",
        "Set the endpoint's base URL, e.g. http://host:8080/v1.",
    ),
    ("custom", "engine_path"): ("providers.W004", "Fix the dotted path or the engine class."),
}


@register()
def check_providers(app_configs=None, databases=None, **kwargs) -> list[Warning]:
    if not databases or DEFAULT_DB_ALIAS not in databases:
        return []
    warnings: list[Warning] = []
    for provider in _enabled_providers(DEFAULT_DB_ALIAS):
        for field, messages in provider_config_errors(provider=provider).items():
            if (provider.kind, field) not in CHECKED_FIELDS:
                continue
            check_id, hint = CHECKED_FIELDS[provider.kind, field]
            warnings.extend(
                Warning(
                    f"Provider {provider.name!r}: {message}", hint=hint, obj=provider, id=check_id
                )
                for message in messages
            )
    return warnings
