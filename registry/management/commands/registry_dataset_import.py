import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry import selectors
from registry.exceptions import DatasetExists, InvalidDataset, SignatureNotFound
from registry.models import DatasetSplit
from registry.services.datasets import DatasetFormat, dataset_format_for, dataset_import


class Command(BaseCommand):
    help = (
        "Import a JSONL or CSV file as a dataset of a signature: all or nothing. Every row is "
        "checked against the signature's fields (the production version's, else the latest's, "
        "or --signature-version) before anything is written; a bad row is reported with its number."
    )

    def add_arguments(self, parser):
        parser.add_argument("signature", help="The signature's name, e.g. `qa`.")
        parser.add_argument("file", help="A .jsonl or .csv file, or `-` for standard input.")
        parser.add_argument("--name", required=True, help="The dataset's name, e.g. `starter`.")
        parser.add_argument(
            "--format",
            choices=DatasetFormat.values,
            help="The file's format; default: from its extension (JSONL for standard input).",
        )
        parser.add_argument(
            "--split",
            choices=DatasetSplit.values,
            default=DatasetSplit.TRAIN,
            help="The split of rows that name none (default: train).",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Replace the examples of an existing dataset of this name.",
        )
        parser.add_argument("--description", help="What the dataset holds (kept when omitted).")
        parser.add_argument(
            "--signature-version",
            help=(
                "The version number or alias whose fields check the rows (default: "
                "production, else the latest version)."
            ),
        )

    def handle(self, *args, **options):
        file = options["file"]
        file_format = options["format"] or (
            DatasetFormat.JSONL if file == "-" else dataset_format_for(file)
        )
        if file_format is None:
            raise CommandError(f"{file}: the name ends in neither .jsonl nor .csv; give --format.")
        try:
            signature = selectors.signature_get(name=options["signature"])
        except SignatureNotFound as exc:
            raise CommandError(f"There is no signature named {options['signature']!r}.") from exc
        started = time.perf_counter()
        try:
            stream = sys.stdin.buffer if file == "-" else Path(file).open("rb")  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from exc
        try:
            dataset = dataset_import(
                signature=signature,
                name=options["name"],
                content=stream,
                format=file_format,
                split=options["split"],
                replace=options["replace"],
                description=options["description"],
                source=f"file: {Path(file).name}" if file != "-" else "standard input",
                version=options["signature_version"],
                progress=self._progress,
            )
        except InvalidDataset as exc:
            lines = "\n".join(f"  - {problem}" for problem in exc.problems)
            more = exc.problem_count - len(exc.problems)
            tail = f"\n  ... and {more} more" if more else ""
            raise CommandError(f"Nothing was imported:\n{lines}{tail}") from exc
        except DatasetExists as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        counts = ", ".join(f"{split} {count}" for split, count in dataset.split_counts.items())
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {dataset.example_count} examples into {dataset} ({counts}) in "
                f"{time.perf_counter() - started:.1f} s; content hash {dataset.content_hash}."
            )
        )

    def _progress(self, stored: int, total: int) -> None:
        if stored == 0:
            self.stdout.write(f"  checked {total} examples: all valid")
        else:
            self.stdout.write(f"  stored {stored}/{total} examples")
