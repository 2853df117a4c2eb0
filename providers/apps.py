from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers"

    def ready(self) -> None:
        # Registers the system checks, and connects the warm-up of local models to
        # django-q2's worker start.
        from providers import checks, signals  # noqa: F401
