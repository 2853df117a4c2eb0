"""Errors the registry raises to its callers (the API, the admin, commands, other apps).

Each is a `core.errors.ApplicationError`: a stable machine-readable ``code``, an HTTP
``status_code`` and a human message in ``str(exc)``.
"""

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
