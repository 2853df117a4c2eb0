from django.apps import AppConfig


class ConfigConfig(AppConfig):
    """Project-level app: holds the commands that span every app (bootstrap, serve)."""

    name = "config"
    verbose_name = "DSPy Toolkit"
