from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from monitoring.selectors import PERCENTILES, GroupStats, execution_stats_by, executions_in

MAX_HOURS = 720
COLUMNS = ("count", "succeeded", "failed", "success", *(f"p{p}" for p in PERCENTILES))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _table(title: str, groups: list[GroupStats]) -> list[str]:
    rows = [
        (
            group.label,
            str(group.stats.total),
            str(group.stats.succeeded),
            str(group.stats.failed),
            "-" if group.stats.success_rate is None else f"{group.stats.success_rate:.1%}",
            *(_seconds(group.stats.latency_s.get(p)) for p in PERCENTILES),
        )
        for group in groups
    ]
    header = (title, *COLUMNS)
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


class Command(BaseCommand):
    help = (
        "Executions of the last N hours per signature and per provider: count, succeeded, "
        "failed (or timed out), success rate and latency percentiles (p50, p95, p99 of the "
        "execution time), as a table."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hours",
            type=int,
            default=24,
            help=f"How many hours back from now (1 to {MAX_HOURS}; default 24).",
        )

    def handle(self, *args, hours: int, **options) -> None:
        if not 1 <= hours <= MAX_HOURS:
            raise CommandError(f"--hours must be between 1 and {MAX_HOURS}, not {hours}.")
        until = timezone.now()
        since = until - timedelta(hours=hours)
        executions = executions_in(since=since, until=until)
        self.stdout.write(
            f"Executions from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M %Z} "
            "(latency: execution time; success: among succeeded, failed and timed out)."
        )
        for title in ("signature", "provider"):
            groups = execution_stats_by(queryset=executions, group=title)
            self.stdout.write("")
            if not groups:
                self.stdout.write(f"No executions per {title} in this window.")
                continue
            for line in _table(title, groups):
                self.stdout.write(line)
