from django.core.management.base import BaseCommand
from django.utils import timezone

from providers.selectors import provider_breaker_statuses, provider_list


class Command(BaseCommand):
    help = (
        "List the configured providers with their kind, model, state, fallbacks and the "
        "breaker's state as a call would find it now."
    )

    def handle(self, *args, **options) -> None:
        providers = list(provider_list())
        if not providers:
            self.stdout.write(
                "No provider is configured. Run `manage.py providers_install_default_model`."
            )
            return
        statuses = provider_breaker_statuses(providers=providers, now=timezone.now())
        for provider in providers:
            # From the links provider_list prefetched: no query per provider.
            fallbacks = ", ".join(link.fallback.name for link in provider.fallback_links.all())
            state = "enabled" if provider.enabled else "disabled"
            self.stdout.write(
                f"{provider.name}  {provider.kind}  {provider.model}  {state}"
                f"  fallbacks: {fallbacks or '-'}  breaker: {statuses[provider.pk].summary}"
            )
