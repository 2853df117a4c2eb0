from django.core.management.base import BaseCommand

from registry.services.library import library_load


class Command(BaseCommand):
    help = (
        "Load the built-in signature library (qa, summarize, classify_topic, ...). Idempotent: "
        "a new signature gets version 1 and its `production` alias; an unchanged one is left "
        "alone; a template changed by a toolkit upgrade becomes a new version, aliases unmoved."
    )

    def handle(self, *args, **options):
        outcomes = library_load()
        for outcome in outcomes:
            style = self.style.SUCCESS if outcome.status != "unchanged" else str
            self.stdout.write(style(f"    {outcome.status:<11} {outcome.name} ({outcome.detail})"))
        created = sum(outcome.status != "unchanged" for outcome in outcomes)
        self.stdout.write(
            f"    library: {len(outcomes)} signatures, {created} created or updated, "
            f"{len(outcomes) - created} unchanged"
        )
