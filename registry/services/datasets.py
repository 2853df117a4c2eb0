"""Datasets: importing labelled examples (JSONL or CSV) for a signature, exporting them, hashing
them, deleting them.

The file format is flat: one example per JSONL line (or CSV row), a key per input field and
per output field of the signature, an optional `split` (`train`, `dev`, `test`) and an
optional `accepted` object mapping a `str` output field to further accepted answers (in CSV,
columns `accepted.<field>` with answers separated by ` | `). Values are checked against a
signature version's fields with the rules execute inputs obey (`registry.inputs`); CSV cells
are text, so non-text fields are read from their text first (`3`, `0.5`, `true`, JSON for
lists and objects).

An import is all or nothing: every row is validated before anything is written, every problem
is reported with its row number and field (`InvalidDataset`), and the examples replace a
dataset's old ones in one transaction, so its content hash always names exactly what it holds.
"""

import csv
import hashlib
import io
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from core.api.parsers import json_depth_exceeds, unstorable_string
from registry.exceptions import (
    AliasNotFound,
    DatasetExists,
    DatasetInUse,
    DatasetProblem,
    InvalidDataset,
    VersionNotFound,
)
from registry.field_types import RULES, FieldType

# The one rule set execute inputs obey; see the report's note on making it public.
from registry.inputs import field_value_coerce
from registry.models import Dataset, DatasetExample, DatasetSplit, Signature, SignatureVersion
from registry.selectors import dataset_examples, signature_version_resolve
from registry.services._common import MaybeUser, user_or_none
from registry.specs import canonical_json, name_problem, text_problem

SPLIT_KEY = "split"
ACCEPTED_KEY = "accepted"
CSV_ACCEPTED_PREFIX = "accepted."
CSV_ANSWER_SEPARATOR = " | "
# Beyond this an import is refused: the whole file is validated in memory before it is stored.
MAX_EXAMPLES = 200_000
# Rows per INSERT: large enough that 10,000 examples take a handful of round trips.
BATCH_SIZE = 2000

# An example as the hash and the exports see it: (split, inputs, outputs, accepted).
ExampleTuple = tuple[str, dict[str, Any], dict[str, Any], dict[str, list[str]]]
Progress = Callable[[int, int], None]
Content = bytes | str | IO[str] | IO[bytes]


class DatasetFormat(models.TextChoices):
    JSONL = "jsonl", "JSON Lines"
    CSV = "csv", "CSV"


MEDIA_TYPES = {DatasetFormat.JSONL: "application/x-ndjson", DatasetFormat.CSV: "text/csv"}


def dataset_format_for(filename: str) -> str | None:
    """The format a file name's extension names (`.jsonl`, `.ndjson`, `.csv`), or None."""
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".ndjson")):
        return DatasetFormat.JSONL
    if lowered.endswith(".csv"):
        return DatasetFormat.CSV
    return None


def dataset_content_hash(examples: Iterable[ExampleTuple]) -> str:
    """sha256 over the canonical JSON of the ordered examples `[[split, inputs, outputs,
    accepted], ...]`; written piece by piece, it equals hashing `canonical_json` of the list."""
    digest = hashlib.sha256(b"[")
    for index, (split, inputs, outputs, accepted) in enumerate(examples):
        if index:
            digest.update(b",")
        digest.update(canonical_json([split, inputs, outputs, accepted]).encode())
    digest.update(b"]")
    return digest.hexdigest()


def dataset_validation_version(
    *, signature: Signature, version: SignatureVersion | int | str | None = None
) -> SignatureVersion:
    """The version whose fields a dataset is checked against: the one given (a version, its
    number or an alias), else `production`, else the latest version."""
    if isinstance(version, SignatureVersion):
        if version.signature_id != signature.pk:
            raise InvalidDataset(
                [DatasetProblem("invalid_version", f"{version} is not a version of {signature}.")]
            )
        return version
    try:
        return signature_version_resolve(name=signature.name, ref=version)
    except (VersionNotFound, AliasNotFound) as exc:
        message = str(exc)
        if version is None:
            message += " Add a version before importing a dataset: its fields check the rows."
        raise InvalidDataset([DatasetProblem("not_found", message, None, "version")]) from exc


# Reading rows ----------------------------------------------------------------------------------


@dataclass
class _Fields:
    """The fields a dataset row must have, from one signature version."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]

    @classmethod
    def of(cls, version: SignatureVersion) -> "_Fields":
        return cls(list(version.input_fields), list(version.output_fields))

    @property
    def names(self) -> list[str]:
        return [field["name"] for field in (*self.inputs, *self.outputs)]

    def text_outputs(self) -> list[str]:
        return [field["name"] for field in self.outputs if field["type"] == FieldType.STR]

    def by_name(self) -> dict[str, dict[str, Any]]:
        return {field["name"]: field for field in (*self.inputs, *self.outputs)}


def _text_stream(content: Content) -> IO[str]:
    if isinstance(content, bytes):
        try:
            return io.StringIO(content.decode("utf-8-sig"), newline="")
        except UnicodeDecodeError as exc:
            raise _not_utf8(exc) from exc
    if isinstance(content, str):
        return io.StringIO(content.removeprefix("\ufeff"), newline="")
    if isinstance(content, io.TextIOBase):
        return content
    return io.TextIOWrapper(content, encoding="utf-8-sig", newline="")  # a binary stream


def _not_utf8(exc: UnicodeDecodeError) -> InvalidDataset:
    return InvalidDataset(
        [DatasetProblem("invalid_encoding", f"The file is not UTF-8 text ({exc.reason}).")]
    )


# Each reader yields (row number, the row as a JSONL-shaped object or None, its problems).
RowReading = Iterator[tuple[int, Any, list[DatasetProblem]]]


def _jsonl_rows(stream: IO[str]) -> RowReading:
    """Each non-blank line, parsed."""
    row = 0
    for line in stream:
        if not line.strip():
            continue
        row += 1
        try:
            yield row, json.loads(line), []
        except RecursionError:
            yield row, None, [DatasetProblem("invalid_json", "The line nests too deeply.", row)]
        except ValueError as exc:
            yield row, None, [DatasetProblem("invalid_json", f"Not valid JSON: {exc}.", row)]


def _csv_rows(stream: IO[str], fields: _Fields, problems: list[DatasetProblem]) -> RowReading:
    """Each non-blank CSV row as the object a JSONL line would hold, the header checked
    first (its problems, added to `problems`, end the file: every row would repeat them)."""
    reader = csv.reader(stream, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        problems.append(DatasetProblem("invalid_csv", f"The header row is not valid CSV: {exc}."))
        return
    if header is None:
        return
    header = [column.strip() for column in header]  # "question, answer" names `answer`
    header_problems = _csv_header_problems(header, fields)
    if header_problems:
        problems.extend(header_problems)
        return
    by_name = fields.by_name()
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row += 1
            yield row, None, [DatasetProblem("invalid_csv", f"Not valid CSV: {exc}.", row)]
            continue
        if not any(cell.strip() for cell in cells):
            continue
        row += 1
        if len(cells) != len(header):
            message = f"The row has {len(cells)} cells; the header has {len(header)} columns."
            yield row, None, [DatasetProblem("wrong_column_count", message, row)]
            continue
        yield row, *_csv_row(row, dict(zip(header, cells, strict=True)), by_name)


def _csv_header_problems(header: list[str], fields: _Fields) -> list[DatasetProblem]:
    problems = []
    names = set(fields.names)
    text_outputs = fields.text_outputs()
    seen: set[str] = set()
    for column in header:
        if column in seen:
            problems.append(
                DatasetProblem("duplicate_column", "The column appears twice.", None, column)
            )
        seen.add(column)
        if column.startswith(CSV_ACCEPTED_PREFIX):
            if column.removeprefix(CSV_ACCEPTED_PREFIX) not in text_outputs:
                problems.append(_accepted_target_problem(column, text_outputs, row=None))
        elif column not in names and column != SPLIT_KEY:
            problems.append(_unknown_problem(column, fields, row=None))
    for name in fields.names:
        if name not in seen:
            problems.append(
                DatasetProblem("missing", f"The header has no column '{name}'.", None, name)
            )
    return problems


def _csv_row(
    row: int, cells: dict[str, str], by_name: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[DatasetProblem]]:
    """A CSV row as the object a JSONL line would hold (values read from their text)."""
    values: dict[str, Any] = {}
    problems: list[DatasetProblem] = []
    accepted: dict[str, list[str]] = {}
    for column, cell in cells.items():
        if column == SPLIT_KEY:
            if cell.strip():
                values[SPLIT_KEY] = cell.strip()
        elif column.startswith(CSV_ACCEPTED_PREFIX):
            answers = [answer.strip() for answer in cell.split(CSV_ANSWER_SEPARATOR.strip())]
            if any(answers):
                accepted[column.removeprefix(CSV_ACCEPTED_PREFIX)] = [a for a in answers if a]
        else:
            value, problem = _from_text(by_name[column], cell)
            if problem:
                problems.append(DatasetProblem(*problem, row, column))
            values[column] = value
    if problems:
        return None, problems
    if accepted:
        values[ACCEPTED_KEY] = accepted
    return values, []


_INT_TEXT = re.compile(r"[+-]?\d+")


def _from_text(field: dict[str, Any], text: str) -> tuple[Any, tuple[str, str] | None]:
    """A CSV cell as the JSON value of the field's type, or (code, message)."""
    kind = field["type"]
    if kind in (FieldType.STR, FieldType.LITERAL):
        return text, None
    stripped = text.strip()
    expected = RULES[kind].expected
    wrong = ("wrong_type", f"Expected {expected}, got the text {stripped[:80]!r}.")
    if kind == FieldType.INT:
        return (int(stripped), None) if _INT_TEXT.fullmatch(stripped) else (None, wrong)
    if kind == FieldType.FLOAT:
        try:
            number = float(stripped)
        except ValueError:
            return None, wrong
        return (number, None) if math.isfinite(number) else (None, wrong)
    if kind == FieldType.BOOL:
        lowered = stripped.lower()
        return (lowered == "true", None) if lowered in ("true", "false") else (None, wrong)
    try:
        return json.loads(stripped), None  # list[str] and dict cells hold JSON
    except (ValueError, RecursionError):
        return None, ("wrong_type", f"Expected {expected} written as JSON, got {stripped[:80]!r}.")


# Checking rows -----------------------------------------------------------------------------


def _unknown_problem(key: str, fields: _Fields, *, row: int | None) -> DatasetProblem:
    allowed = ", ".join([*fields.names, SPLIT_KEY, ACCEPTED_KEY])
    return DatasetProblem(
        "unknown_field",
        f"'{key}' is not a field of the signature; the keys are {allowed}.",
        row,
        key,
    )


def _accepted_target_problem(key: str, text_outputs: list[str], *, row: int | None):
    allowed = ", ".join(text_outputs) or "none (the signature has no str output field)"
    return DatasetProblem(
        "invalid_accepted",
        f"'{key}' cannot have accepted answers: only str output fields can ({allowed}).",
        row,
        key if row is None else ACCEPTED_KEY,
    )


def _row_check(
    row: int, value: Any, fields: _Fields, default_split: str
) -> tuple[ExampleTuple | None, list[DatasetProblem]]:
    """A parsed row as an example, or every problem it has."""
    if not isinstance(value, dict):
        return None, [DatasetProblem("not_an_object", "Each example must be a JSON object.", row)]
    if json_depth_exceeds(value, max_depth=settings.API_MAX_JSON_DEPTH):
        depth = settings.API_MAX_JSON_DEPTH
        return None, [DatasetProblem("too_deep", f"The row nests deeper than {depth} levels.", row)]
    unstorable = unstorable_string(value)
    if unstorable:
        path, problem = unstorable
        field = str(path[0]) if path else None
        return None, [
            DatasetProblem("invalid_character", f"The text contains {problem}.", row, field)
        ]
    problems: list[DatasetProblem] = []
    known = {*fields.names, SPLIT_KEY, ACCEPTED_KEY}
    problems.extend(
        _unknown_problem(str(key), fields, row=row) for key in value if key not in known
    )
    inputs = _values_check(row, value, fields.inputs, problems)
    outputs = _values_check(row, value, fields.outputs, problems)
    split = value.get(SPLIT_KEY, default_split)
    if split not in DatasetSplit.values:
        problems.append(
            DatasetProblem(
                "invalid_split",
                f"The split must be one of {', '.join(DatasetSplit.values)}, got {split!r}.",
                row,
                SPLIT_KEY,
            )
        )
    accepted = _accepted_check(row, value.get(ACCEPTED_KEY, {}), fields, problems)
    if problems:
        return None, problems
    return (split, inputs, outputs, accepted), []


def _values_check(
    row: int, value: dict[str, Any], fields: list[dict[str, Any]], problems: list[DatasetProblem]
) -> dict[str, Any]:
    checked = {}
    for field in fields:
        name = field["name"]
        if name not in value:
            problems.append(
                DatasetProblem("missing", f"The field '{name}' is required.", row, name)
            )
            continue
        try:
            coerced, problem = field_value_coerce(field, value[name])
        except OverflowError:  # an integer too large for a float field
            coerced, problem = None, [{"code": "wrong_type", "message": "The number is too large."}]
        if problem:
            problems.extend(DatasetProblem(p["code"], p["message"], row, name) for p in problem)
        else:
            checked[name] = coerced
    return checked


def _accepted_check(
    row: int, accepted: Any, fields: _Fields, problems: list[DatasetProblem]
) -> dict[str, list[str]]:
    """Accepted answers in output-field order, empty lists left out."""
    if not isinstance(accepted, dict):
        problems.append(
            DatasetProblem(
                "invalid_accepted",
                "`accepted` must be an object mapping a str output field to a list of answers.",
                row,
                ACCEPTED_KEY,
            )
        )
        return {}
    text_outputs = fields.text_outputs()
    for key, answers in accepted.items():
        if key not in text_outputs:
            problems.append(_accepted_target_problem(str(key), text_outputs, row=row))
        elif not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            problems.append(
                DatasetProblem(
                    "invalid_accepted",
                    f"The accepted answers of '{key}' must be a list of strings.",
                    row,
                    ACCEPTED_KEY,
                )
            )
    return {name: list(accepted[name]) for name in text_outputs if accepted.get(name)}


def dataset_examples_parse(
    *,
    version: SignatureVersion,
    content: Content | None = None,
    rows: Iterable[Any] | None = None,
    format: str = DatasetFormat.JSONL,
    split: str = DatasetSplit.TRAIN,
) -> list[ExampleTuple]:
    """Every example of a file (or of `rows`, objects shaped like JSONL lines), checked
    against `version`'s fields; raises InvalidDataset with every problem found."""
    if (content is None) == (rows is None):
        raise InvalidDataset(
            [
                DatasetProblem(
                    "invalid", "Give either the file's content or the rows.", None, "content"
                )
            ]
        )
    problems: list[DatasetProblem] = []
    if format not in DatasetFormat.values:
        problems.append(
            DatasetProblem(
                "invalid_choice",
                f"The format must be one of {', '.join(DatasetFormat.values)}.",
                None,
                "format",
            )
        )
    if split not in DatasetSplit.values:
        problems.append(
            DatasetProblem(
                "invalid_choice",
                f"The default split must be one of {', '.join(DatasetSplit.values)}.",
                None,
                SPLIT_KEY,
            )
        )
    if problems:
        raise InvalidDataset(problems)
    fields = _Fields.of(version)
    if rows is not None:
        source = ((number, row, []) for number, row in enumerate(rows, start=1))
    elif format == DatasetFormat.CSV:
        source = _csv_rows(_text_stream(content), fields, problems)
    else:
        source = _jsonl_rows(_text_stream(content))
    examples: list[ExampleTuple] = []
    try:
        for number, value, reading_problems in source:
            if number > MAX_EXAMPLES:
                problems.append(
                    DatasetProblem("too_many_examples", f"At most {MAX_EXAMPLES} examples.", number)
                )
                break
            if reading_problems:
                problems.extend(reading_problems)
                continue
            example, row_problems = _row_check(number, value, fields, split)
            if row_problems:
                problems.extend(row_problems)
            elif not problems:  # once a row is bad, nothing is kept: only the count matters
                examples.append(example)
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc) from exc
    if not problems and not examples:
        problems.append(DatasetProblem("empty", "The file holds no examples.", None, "content"))
    if problems:
        raise InvalidDataset(problems)
    return examples


# Writing ---------------------------------------------------------------------------------------


def _storable(text: str) -> str:
    """A label such as an uploaded file's name, as text PostgreSQL can store."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode()


def _options_check(*, name: Any, description: Any) -> None:
    problems = []
    problem = name_problem(name, what="A dataset name")
    if problem:
        problems.append(DatasetProblem("invalid", problem, None, "name"))
    if description is not None:
        problem = text_problem(description)
        if problem:
            problems.append(
                DatasetProblem("invalid", f"The description {problem}", None, "description")
            )
    if problems:
        raise InvalidDataset(problems)


def dataset_import(
    *,
    signature: Signature,
    name: str,
    content: Content | None = None,
    rows: Iterable[Any] | None = None,
    format: str = DatasetFormat.JSONL,
    split: str = DatasetSplit.TRAIN,
    replace: bool = False,
    description: str | None = None,
    source: str = "",
    user: MaybeUser = None,
    version: SignatureVersion | int | str | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Import a dataset for `signature`: all or nothing.

    The examples come from `content` (JSONL or CSV: bytes, text, or a stream) or `rows` (a
    list of objects shaped like JSONL lines); `split` is the split of rows that name none.
    They are checked against `version` (see `dataset_validation_version`) before anything
    is written. An existing dataset of that name is refused (DatasetExists) unless `replace`,
    which swaps all of its examples at once. `description` None keeps the current one.
    `progress(stored, total)` is called once the file is valid and after each batch.
    """
    _options_check(name=name, description=description)
    checked_against = dataset_validation_version(signature=signature, version=version)
    examples = dataset_examples_parse(
        version=checked_against, content=content, rows=rows, format=format, split=split
    )
    total = len(examples)
    if progress:
        progress(0, total)
    content_hash = dataset_content_hash(examples)
    counts = Counter(example[0] for example in examples)
    split_counts = {split: counts[split] for split in DatasetSplit.values if counts[split]}
    with transaction.atomic():
        # One import per signature at a time: a concurrent import of the same new name waits
        # here and then sees the dataset, instead of failing on the unique constraint.
        Signature.objects.select_for_update().get(pk=signature.pk)
        dataset = Dataset.objects.select_for_update().filter(signature=signature, name=name).first()
        if dataset is not None and not replace:
            raise DatasetExists(
                f"{signature.name} already has a dataset '{name}'; import with replace to swap "
                "its examples."
            )
        values = {
            "content_hash": content_hash,
            "example_count": total,
            "split_counts": split_counts,
            "source": _storable(source)[: Dataset._meta.get_field("source").max_length],
        }
        if description is not None:
            values["description"] = description
        if dataset is None:
            dataset = Dataset.objects.create(
                signature=signature, name=name, created_by=user_or_none(user), **values
            )
        else:
            DatasetExample.objects.filter(dataset=dataset).delete()
            for key, value in values.items():
                setattr(dataset, key, value)
            dataset.updated_at = timezone.now()
            dataset.save(update_fields=[*values, "updated_at"])
        for start in range(0, total, BATCH_SIZE):
            DatasetExample.objects.bulk_create(
                DatasetExample(
                    dataset=dataset,
                    position=position,
                    split=example_split,
                    inputs=inputs,
                    outputs=outputs,
                    accepted=accepted,
                )
                for position, (example_split, inputs, outputs, accepted) in enumerate(
                    examples[start : start + BATCH_SIZE], start=start + 1
                )
            )
            if progress:
                progress(min(start + BATCH_SIZE, total), total)
    return dataset


@transaction.atomic
def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset and its examples, unless evaluation or optimization runs name it
    (scores recorded on it keep its hash and lose only the link)."""
    try:
        dataset.delete()
    except ProtectedError as exc:
        runs = list(exc.protected_objects)
        listed = "; ".join(sorted(str(run) for run in runs[:5]))
        if len(runs) > 5:
            listed += f"; and {len(runs) - 5} more"
        raise DatasetInUse(
            f"The dataset {dataset} is used by {len(runs)} run(s) and cannot be deleted "
            f"({listed}); re-import it with replace to change its examples instead."
        ) from exc


# Exporting -------------------------------------------------------------------------------------


def _example_rows(dataset: Dataset, split: str | None) -> Iterator[ExampleTuple]:
    rows = dataset_examples(dataset=dataset, split=split).values_list(
        "split", "inputs", "outputs", "accepted"
    )
    yield from rows.iterator(chunk_size=BATCH_SIZE)


def dataset_export(
    *, dataset: Dataset, format: str = DatasetFormat.JSONL, split: str | None = None
) -> Iterator[str]:
    """The dataset's examples (of one split, when given) as JSONL or CSV text, piece by piece
    and in order, so a download or a file never holds the whole dataset in memory. Importing
    the result against the same version gives a dataset with the same content hash."""
    if format == DatasetFormat.CSV:
        return _csv_export(dataset, split)
    return _jsonl_export(dataset, split)


def _field_order(dataset: Dataset) -> Callable[[Iterable[str]], list[str]]:
    """Sorts a row's keys into the order of the signature's fields (PostgreSQL's JSON keeps
    its own key order), keys the current version lacks last."""
    try:
        version = dataset_validation_version(signature=dataset.signature)
        names = [field["name"] for field in (*version.input_fields, *version.output_fields)]
    except InvalidDataset:
        names = []
    rank = {name: index for index, name in enumerate(names)}
    return lambda keys: sorted(keys, key=lambda key: (rank.get(key, len(rank)), key))


def _jsonl_export(dataset: Dataset, split: str | None) -> Iterator[str]:
    ordered = _field_order(dataset)
    for example_split, inputs, outputs, accepted in _example_rows(dataset, split):
        line = {SPLIT_KEY: example_split}
        line |= {key: inputs[key] for key in ordered(inputs)}
        line |= {key: outputs[key] for key in ordered(outputs)}
        if accepted:
            line[ACCEPTED_KEY] = {key: accepted[key] for key in ordered(accepted)}
        yield json.dumps(line, ensure_ascii=False) + "\n"


class _Line:
    """The file-like object csv.writer writes one row to at a time (Django's streaming CSV
    recipe): `write` hands the text back instead of keeping it."""

    def write(self, text: str) -> str:
        return text


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _csv_export(dataset: Dataset, split: str | None) -> Iterator[str]:
    first = dataset.examples.order_by("position").values_list("inputs", "outputs").first()
    if first is None:
        return
    ordered = _field_order(dataset)
    inputs, outputs = ordered(first[0]), ordered(first[1])
    with_answers = {
        key
        for accepted in dataset.examples.exclude(accepted={}).values_list("accepted", flat=True)
        for key in accepted
    }
    accepted_columns = [name for name in outputs if name in with_answers]
    writer = csv.writer(_Line(), lineterminator="\n")
    yield writer.writerow(
        [SPLIT_KEY, *inputs, *outputs, *(CSV_ACCEPTED_PREFIX + name for name in accepted_columns)]
    )
    for example_split, input_values, output_values, accepted in _example_rows(dataset, split):
        yield writer.writerow(
            [
                example_split,
                *(_cell(input_values[name]) for name in inputs),
                *(_cell(output_values[name]) for name in outputs),
                *(CSV_ANSWER_SEPARATOR.join(accepted.get(name, [])) for name in accepted_columns),
            ]
        )
