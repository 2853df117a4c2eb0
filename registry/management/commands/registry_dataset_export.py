from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry import selectors
from registry.exceptions import DatasetNotFound, SignatureNotFound
from registry.models import DatasetSplit
from registry.services.datasets import (
    BATCH_SIZE,
    DatasetFormat,
    dataset_export,
    dataset_format_for,
)


class Command(BaseCommand):
    help = (
        "Export a signature's dataset as JSONL or CSV (the formats registry_dataset_import "
        "reads; importing the file again gives the same content hash)."
    )

    def add_arguments(self, parser):
        parser.add_argument("signature", help="The signature's name, e.g. `qa`.")
        parser.add_argument("dataset", help="The dataset's name, e.g. `starter`.")
        parser.add_argument(
            "--format",
            choices=DatasetFormat.values,
            help="default: from the output file's extension, else jsonl.",
        )
        parser.add_argument(
            "--split", choices=DatasetSplit.values, help="Only the examples of this split."
        )
        parser.add_argument(
            "--output", "-o", type=Path, help="File to write; standard output when omitted."
        )

    def handle(self, *args, signature: str, dataset: str, output: Path | None, **options):
        try:
            found = selectors.dataset_get(
                signature=selectors.signature_get(name=signature), name=dataset
            )
        except (SignatureNotFound, DatasetNotFound) as exc:
            raise CommandError(str(exc)) from exc
        file_format = (
            options["format"]
            or (dataset_format_for(output.name) if output else None)
            or DatasetFormat.JSONL
        )
        split = options["split"]
        chunks = dataset_export(dataset=found, format=file_format, split=split)
        if output is None:
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
            return
        total = found.split_counts.get(split, 0) if split else found.example_count
        header = file_format == DatasetFormat.CSV
        written = 0
        try:
            with output.open("w", encoding="utf-8", newline="") as file:
                for index, chunk in enumerate(chunks):
                    file.write(chunk)
                    written = index + (0 if header else 1)
                    if written and written % BATCH_SIZE == 0:
                        self.stdout.write(f"  wrote {written}/{total} examples")
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc}") from exc
        self.stdout.write(
            self.style.SUCCESS(f"Exported {written} examples of {found} to {output}.")
        )
