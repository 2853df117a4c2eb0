"""Errors the registry raises to its callers (the API, the admin, commands, other apps).

Each is a `core.errors.ApplicationError`: a stable machine-readable ``code``, an HTTP
``status_code`` and a human message in ``str(exc)``.
"""

from dataclasses import dataclass
from typing import Any

from core.errors import ApplicationError, Conflict, InvalidRequest, NotFound


def errors_flatten(errors: Any, path: str = "") -> list[str]:
    """Nested field errors as ``path: message`` lines, for commands and logs."""
    if isinstance(errors, dict):
        lines = []
        for key, value in errors.items():
            child = path if key == "non_field_errors" else (f"{path}.{key}" if path else key)
            lines.extend(errors_flatten(value, child))
        return lines
    if isinstance(errors, list) and errors and all(isinstance(e, dict) for e in errors):
        lines = []
        for index, item in enumerate(errors):
            lines.extend(errors_flatten(item, f"{path}[{index}]"))
        return lines
    if isinstance(errors, list):
        return [f"{path}: {message}" if path else str(message) for message in errors]
    return [f"{path}: {errors}" if path else str(errors)]


class RegistryError(ApplicationError):
    code = "registry_error"


class SignatureNotFound(RegistryError, NotFound):
    code = "signature_not_found"


class VersionNotFound(RegistryError, NotFound):
    code = "version_not_found"


class AliasNotFound(RegistryError, NotFound):
    code = "alias_not_found"


class ImmutableVersionError(RegistryError, Conflict):
    """A saved signature version was about to be changed or deleted."""

    code = "immutable_version"


class AliasConflict(RegistryError, Conflict):
    """An alias move named the version it expected to move from, and the alias had moved on."""

    code = "alias_conflict"


class SignatureAlreadyExists(RegistryError, Conflict):
    code = "signature_exists"

    def __init__(self, message: str) -> None:
        super().__init__(message, errors={"name": [message]})


class InvalidSpec(RegistryError, InvalidRequest):
    """A signature or version spec failed validation.

    ``errors`` maps each offending field to its messages, nested the way DRF nests serializer
    errors: ``{"input_fields": [{}, {"name": ["..."]}], "module_kind": ["..."]}``.
    """

    code = "invalid_spec"

    def __init__(self, errors: dict):
        super().__init__("Invalid spec: " + "; ".join(errors_flatten(errors)), errors=errors)


class InputValidationError(RegistryError, InvalidRequest):
    """An execute request's inputs do not match the version's input fields.

    ``errors`` maps a field name (or ``non_field_errors``) to a list of
    ``{"code": "missing" | "unknown_field" | "wrong_type" | "invalid_choice", "message": ...}``.
    """

    code = "invalid_inputs"

    def __init__(self, errors: dict[str, list[dict[str, str]]]):
        fields = ", ".join(sorted(errors))
        super().__init__(
            f"The inputs do not match the signature's input fields ({fields}).", errors=errors
        )


class ImportFileError(RegistryError, InvalidRequest):
    """An import file is unreadable, malformed, or conflicts with the registry."""

    code = "invalid_import"

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class DatasetNotFound(RegistryError, NotFound):
    code = "dataset_not_found"


class DatasetExists(RegistryError, Conflict):
    """An import named a dataset that exists, without asking to replace it."""

    code = "dataset_exists"

    def __init__(self, message: str) -> None:
        super().__init__(message, errors={"name": [message]})


class DatasetInUse(RegistryError, Conflict):
    """A dataset was about to be deleted while evaluation or optimization runs name it."""

    code = "dataset_in_use"


@dataclass(frozen=True)
class DatasetProblem:
    """One thing wrong with a dataset import: a row's field (``row`` counts examples from 1,
    as `DatasetExample.position` does), a whole row (``field`` None), or the file or an
    option (``row`` None, ``field`` the option or column)."""

    code: str
    message: str
    row: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = [f"row {self.row}"] if self.row is not None else []
        if self.field is not None:
            where.append(self.field)
        return f"{', '.join(where)}: {self.message}" if where else self.message


class InvalidDataset(RegistryError, InvalidRequest):
    """A dataset file (or its import options) failed validation; nothing was imported.

    ``errors`` holds each problem as the API's field errors: options and columns at the top
    (``{"split": [...]}``), rows under ``rows`` keyed by row number and then by field
    (``{"rows": {"3": {"answer": [{"code": "wrong_type", "message": ...}]}}}``). At most
    `MAX_REPORTED` problems are listed; ``problem_count`` says how many there were.
    """

    code = "invalid_dataset"
    MAX_REPORTED = 100

    def __init__(self, problems: list[DatasetProblem]) -> None:
        self.problem_count = len(problems)
        self.problems = problems[: self.MAX_REPORTED]
        errors: dict[str, Any] = {}
        for problem in self.problems:
            entry = {"code": problem.code, "message": problem.message}
            key = problem.field or "non_field_errors"
            if problem.row is None:
                errors.setdefault(key, []).append(entry)
            else:
                row = errors.setdefault("rows", {}).setdefault(str(problem.row), {})
                row.setdefault(key, []).append(entry)
        summary = "; ".join(str(problem).rstrip(".") for problem in self.problems[:5])
        if self.problem_count > 5:
            summary += f"; and {self.problem_count - 5} more"
        super().__init__(f"Nothing was imported: {summary}.", errors=errors)
