from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.models import Schedule

REAPER_SCHEDULE_NAME = "executions: reap stale executions"
REAPER_FUNC = "executions.tasks.execution_reap_stale"


class Command(BaseCommand):
    help = (
        "Install (or update) the django-q2 schedule of the executions reaper, which recovers "
        "running executions whose worker died. Idempotent."
    )

    def handle(self, *args, **options):
        minutes = settings.EXECUTIONS_REAPER_EVERY_MINUTES
        schedule, created = Schedule.objects.update_or_create(
            name=REAPER_SCHEDULE_NAME,
            defaults={
                "func": REAPER_FUNC,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
                # Run by the default (`tasks`) cluster, never the inference one.
                "cluster": None,
                # A run every minute would fill django-q2's success list within hours and push
                # out the results worth reading; failed runs are still kept.
                "kwargs": "{'q_options': {'save': False}}",
            },
        )
        verb = "installed" if created else "up to date"
        self.stdout.write(f"    reaper schedule {verb}: every {minutes} minute(s), {schedule.func}")
