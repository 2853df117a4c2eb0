from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.models import Schedule

REAPER_SCHEDULE_NAME = "executions: reap stale executions"
REAPER_FUNC = "executions.tasks.execution_reap_stale"
RETENTION_SCHEDULE_NAME = "executions: prune old executions"
RETENTION_FUNC = "executions.services.retention.execution_prune_expired"


class Command(BaseCommand):
    help = (
        "Install (or update) the django-q2 schedules of the executions app: the reaper, which "
        "recovers running executions whose worker died (every EXECUTIONS_REAPER_EVERY_MINUTES), "
        "and retention, which deletes executions older than EXECUTIONS_RETENTION_DAYS (daily). "
        "Idempotent."
    )

    def handle(self, *args, **options):
        minutes = settings.EXECUTIONS_REAPER_EVERY_MINUTES
        self._install(
            REAPER_SCHEDULE_NAME,
            label=f"reaper schedule (every {minutes} minute(s))",
            func=REAPER_FUNC,
            schedule_type=Schedule.MINUTES,
            minutes=minutes,
            # A run every minute would fill django-q2's success list within hours and push
            # out the results worth reading; failed runs are still kept.
            kwargs="{'q_options': {'save': False}}",
        )
        self._install(
            RETENTION_SCHEDULE_NAME,
            label="retention schedule (daily)",
            func=RETENTION_FUNC,
            schedule_type=Schedule.DAILY,
            minutes=None,
            kwargs=None,
        )

    def _install(self, name: str, *, label: str, **fields) -> None:
        schedule, created = Schedule.objects.update_or_create(
            name=name,
            # Run by the default (`tasks`) cluster, never the inference one.
            defaults=fields | {"repeats": -1, "cluster": None},
        )
        verb = "installed" if created else "up to date"
        self.stdout.write(f"    {label}: {verb}, {schedule.func}")
