from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"

    def ready(self) -> None:
        # Registers the OpenAPI descriptions of the authentication classes, and connects the
        # warm-up of local models to django-q2's worker start.
        from executions import schema, signals  # noqa: F401
