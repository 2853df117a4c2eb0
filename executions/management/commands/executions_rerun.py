import uuid

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from executions.models import Execution
from executions.services.rerun import execution_rerun


def _version(value: str) -> int | str:
    return int(value) if value.isdigit() else value


class Command(BaseCommand):
    help = (
        "Re-run executions: queue a new execution of each, with its inputs and generation "
        "settings, linked to the original (which does not change). Prints each new id."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        # `--version` names the signature version to run here, not Django's own version flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="+", help="Ids of the executions to re-run.")
        parser.add_argument(
            "--provider", help="Run on this provider (default: the one each execution requested)."
        )
        parser.add_argument(
            "--version",
            type=_version,
            help="Run this version, a number or an alias (default: the one each execution ran).",
        )

    def handle(self, *args, ids: list[str], provider: str | None, version, **options):
        try:
            wanted = [uuid.UUID(value) for value in ids]
        except ValueError as error:
            raise CommandError(f"Not an execution id: {error}") from None
        found = Execution.objects.select_related(
            "signature_version__signature", "requested_provider"
        ).in_bulk(wanted)
        missing = [str(value) for value in wanted if value not in found]
        if missing:
            raise CommandError(f"No execution with id {', '.join(missing)}.")
        for value in wanted:
            try:
                result = execution_rerun(execution=found[value], provider=provider, version=version)
            except ApplicationError as error:
                raise CommandError(f"{value}: {error.message} ({error.code})") from None
            self.stdout.write(f"{value} -> {result.execution.id} ({result.execution.status})")
