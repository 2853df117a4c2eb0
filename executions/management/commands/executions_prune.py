from argparse import ArgumentTypeError

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from executions.services.retention import (
    PruneProgress,
    execution_prune,
    execution_prune_cutoff,
)


def _whole_number(value: str, *, least: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = least - 1
    if number < least:
        raise ArgumentTypeError(f"expected a whole number of at least {least}, got {value!r}")
    return number


def _positive_int(value: str) -> int:
    return _whole_number(value, least=1)


def _non_negative_int(value: str) -> int:
    return _whole_number(value, least=0)


class Command(BaseCommand):
    help = (
        "Delete finished executions (with their attempts) older than the retention, in "
        "batches that each take a short transaction, printing progress. Queued and running "
        "executions are kept. The same runs daily as a django-q2 schedule "
        "(executions_install_schedules)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than-days",
            type=_non_negative_int,
            default=None,
            help="Delete executions that finished more than this many days ago (default: "
            "EXECUTIONS_RETENTION_DAYS; 0 deletes every finished execution).",
        )
        parser.add_argument(
            "--batch-size",
            type=_positive_int,
            default=None,
            help="Executions deleted per transaction (default: EXECUTIONS_PRUNE_BATCH_SIZE).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args, older_than_days, batch_size, dry_run: bool, **options):
        if older_than_days is None:
            days = settings.EXECUTIONS_RETENTION_DAYS
            if days == 0:
                self.stdout.write(
                    "Retention is off (EXECUTIONS_RETENTION_DAYS=0): nothing deleted. "
                    "Pass --older-than-days to prune anyway."
                )
                return
        else:
            days = older_than_days
        # With an explicit 0 every finished execution is old enough.
        cutoff = execution_prune_cutoff(days=days) if days else timezone.now()
        size = batch_size or settings.EXECUTIONS_PRUNE_BATCH_SIZE
        if size < 1:
            raise CommandError("EXECUTIONS_PRUNE_BATCH_SIZE must be at least 1.")
        result = execution_prune(
            older_than=cutoff, batch_size=size, dry_run=dry_run, progress=self._progress
        )
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            self.style.SUCCESS(
                f"Finished before {cutoff:%Y-%m-%d %H:%M:%S} UTC: {verb} {result.executions} "
                f"execution(s) and {result.attempts} attempt(s)."
            )
        )

    def _progress(self, done: PruneProgress) -> None:
        self.stdout.write(
            f"    {done.executions}/{done.total} executions deleted ({done.attempts} attempts)"
        )
