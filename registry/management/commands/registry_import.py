import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry.exceptions import ImportFileError
from registry.services.transfer import registry_import


class Command(BaseCommand):
    help = (
        "Import a registry_export file: all or nothing. Everything is validated before anything "
        "is written; versions the registry has already are kept, missing ones are added with "
        "their original numbers, and the file's aliases are set."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The export file, or `-` for standard input.")

    def handle(self, *args, file: str, **options):
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
            document = json.loads(text)
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise CommandError(f"{file} is not valid JSON: {exc}") from exc
        try:
            outcomes = registry_import(document=document)
        except ImportFileError as exc:
            lines = "\n".join(f"  - {problem}" for problem in exc.problems)
            raise CommandError(f"Nothing was imported:\n{lines}") from exc
        for outcome in outcomes:
            parts = []
            if outcome.created_signature:
                parts.append("created")
            if outcome.created_versions:
                parts.append("added versions " + ", ".join(map(str, outcome.created_versions)))
            if outcome.moved_aliases:
                parts.append("set aliases " + ", ".join(outcome.moved_aliases))
            parts += outcome.notes
            self.stdout.write(f"{outcome.name}: {'; '.join(parts) or 'unchanged'}")
        self.stdout.write(self.style.SUCCESS(f"Imported {len(outcomes)} signatures."))
