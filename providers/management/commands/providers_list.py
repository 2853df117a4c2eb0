from django.core.management.base import BaseCommand

from providers.selectors import provider_list


class Command(BaseCommand):
    help = "List the configured providers with their kind, model, state and fallbacks."

    def handle(self, *args, **options) -> None:
        providers = list(provider_list())
        if not providers:
            self.stdout.write(
                "No provider is configured. Run `manage.py providers_install_default_model`."
            )
            return
        for provider in providers:
            # From the links provider_list prefetched: no query per provider.
            fallbacks = ", ".join(link.fallback.name for link in provider.fallback_links.all())
            state = "enabled" if provider.enabled else "disabled"
            self.stdout.write(
                f"{provider.name}  {provider.kind}  {provider.model}  {state}"
                f"  fallbacks: {fallbacks or '-'}"
            )
