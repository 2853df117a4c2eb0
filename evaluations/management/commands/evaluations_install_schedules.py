from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.models import Schedule

REAPER_SCHEDULE_NAME = "evaluations: reap stale runs"
REAPER_FUNC = "evaluations.tasks.runs_reap_stale"


class Command(BaseCommand):
    help = (
        "Install (or update) the django-q2 schedule of the evaluations app: the reaper, which "
        "resumes evaluation and optimization runs whose worker died, or fails them once they "
        "have used EXECUTIONS_MAX_RUN_ATTEMPTS (every EXECUTIONS_REAPER_EVERY_MINUTES). "
        "Idempotent."
    )

    def handle(self, *args, **options):
        minutes = settings.EXECUTIONS_REAPER_EVERY_MINUTES
        schedule, created = Schedule.objects.update_or_create(
            name=REAPER_SCHEDULE_NAME,
            defaults={
                "func": REAPER_FUNC,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                # As the executions' reaper: a success a minute would push the results worth
                # reading out of django-q2's list; failed runs are still kept.
                "kwargs": "{'q_options': {'save': False}}",
                "repeats": -1,
                # Run by the default (`tasks`) cluster, never an inference one.
                "cluster": None,
            },
        )
        verb = "installed" if created else "up to date"
        self.stdout.write(
            f"    runs reaper schedule (every {minutes} minute(s)): {verb}, {schedule.func}"
        )
