from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The bottom of the dependency graph: the error contract and the API plumbing.

    It imports no app of the project; every app builds on it.
    """

    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        # Registers the OpenAPI descriptions of the authentication classes.
        from core.api import schema  # noqa: F401
