import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry.exceptions import SignatureNotFound
from registry.selectors import registry_export


class Command(BaseCommand):
    help = (
        "Export the registry (or the named signatures) with every version and alias to JSON, "
        "for registry_import."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", help="Signature names; all when none are given.")
        parser.add_argument(
            "--output", "-o", type=Path, help="File to write; standard output when omitted."
        )

    def handle(self, *args, names: list[str], output: Path | None, **options):
        try:
            document = registry_export(names=names or None)
        except SignatureNotFound as exc:
            raise CommandError(str(exc)) from exc
        text = json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
        if output is None:
            self.stdout.write(text, ending="")
            return
        output.write_text(text, encoding="utf-8")
        versions = sum(len(entry["versions"]) for entry in document["signatures"])
        self.stdout.write(
            f"Exported {len(document['signatures'])} signatures ({versions} versions) to {output}."
        )
