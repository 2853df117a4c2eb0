from django.core.management.base import BaseCommand, CommandError

from registry.services.discovery import signatures_discover


class Command(BaseCommand):
    help = (
        "Import a Python module and register every dspy.Signature subclass and every "
        "dspy.Module (class with a no-argument constructor, or instance) whose signature can "
        "be read. A changed signature becomes a new version; an unchanged one is left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("module", help="Dotted path of the module, e.g. `myapp.signatures`.")
        parser.add_argument(
            "--prefix",
            default="",
            help="Prepended to every registered name, e.g. `myapp_`.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would happen; write nothing."
        )

    def handle(self, *args, module: str, prefix: str, dry_run: bool, **options):
        try:
            outcomes = signatures_discover(module_path=module, name_prefix=prefix, dry_run=dry_run)
        except ImportError as exc:
            raise CommandError(f"Cannot import {module}: {exc}") from exc
        if not outcomes:
            self.stdout.write(f"No DSPy signatures or modules found in {module}.")
        for outcome in outcomes:
            style = self.style.WARNING if outcome.status == "skipped" else self.style.SUCCESS
            if outcome.status == "unchanged":
                style = str
            self.stdout.write(style(f"{outcome.status:<11} {outcome.name}: {outcome.detail}"))
        if dry_run:
            self.stdout.write("Dry run: nothing was written.")
