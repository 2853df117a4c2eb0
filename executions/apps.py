from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"

    def ready(self) -> None:
        # Registers the OpenAPI descriptions of the authentication classes.
        from executions import schema  # noqa: F401
