"""The shape of a signature version, its validation and its content hash.

Pure functions over plain JSON data: the API, the admin, the import and discovery commands and
the template library all validate through here, so a spec means the same thing everywhere.

A field spec is a JSON object::

    {"name": "question", "type": "str", "description": "The question to answer.", "prefix": null}
    {"name": "label", "type": "literal", "choices": ["positive", "negative"], "description": ""}

``type`` is one of `registry.field_types.FieldType`. ``choices`` (a non-empty list of
distinct strings) is required for ``literal`` and forbidden otherwise. ``description``
defaults to ``""`` and ``prefix`` to ``null`` (DSPy then derives the prefix from the name).
"""

import hashlib
import json
import keyword
import re
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from core.generation import generation_settings_check
from registry.exceptions import InvalidSpec
from registry.field_types import RULES, FieldType


class ModuleKind(models.TextChoices):
    """DSPy modules a version can run with. Adding one: a member here and in programs."""

    PREDICT = "Predict", "Predict"
    CHAIN_OF_THOUGHT = "ChainOfThought", "ChainOfThought"


NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
NAME_MAX_LENGTH = 100
ALIAS_MAX_LENGTH = 50
LATEST = "latest"
PRODUCTION = "production"

FIELD_NAME_MAX_LENGTH = 64
DESCRIPTION_MAX_LENGTH = 2000
PREFIX_MAX_LENGTH = 100
CHOICE_MAX_LENGTH = 200
MAX_CHOICES = 100
MAX_FIELDS = 50
MAX_TAGS = 20
TAG_MAX_LENGTH = 50
INSTRUCTIONS_MAX_LENGTH = 20_000

# Names a field may not take. DSPy signatures are pydantic models whose class carries these
# attributes (a field of the same name shadows them, and pydantic warns); Predict reads `signature`,
# `demos`, `config`, `lm` and `prediction` out of its call's keyword arguments, so an input of
# that name never reaches the model; ChainOfThought adds its own `reasoning` output field.
# A test checks this set against the installed DSPy.
RESERVED_FIELD_NAMES = frozenset(
    {
        # attributes of dspy.Signature's metaclass (DSPy's properties, ABCMeta's methods)
        "instructions",
        "signature",
        "fields",
        "input_fields",
        "output_fields",
        "mro",
        "register",
        # public attributes of dspy.Signature (pydantic.BaseModel and DSPy's own)
        "append",
        "append_instructions",
        "construct",
        "copy",
        "delete",
        "dict",
        "dump_state",
        "equals",
        "from_orm",
        "insert",
        "json",
        "load_state",
        "parse_file",
        "parse_obj",
        "parse_raw",
        "prepend",
        "schema",
        "schema_json",
        "update_forward_refs",
        "validate",
        "with_instructions",
        "with_updated_fields",
        # the receivers of Module.__call__ and Predict.__call__: an input of that name collides
        # with them ("got multiple values for argument")
        "self",
        "instance",
        # keyword arguments Predict consumes itself
        "demos",
        "config",
        "lm",
        "prediction",
        # the field ChainOfThought adds
        "reasoning",
    }
)
# pydantic reserves every name in its `model_` namespace.
RESERVED_FIELD_PREFIXES = ("model_",)

LM_DEFAULT_KEYS = ("temperature", "max_tokens")


@dataclass(frozen=True)
class VersionSpec:
    """A validated, normalised signature version: what defines its behaviour."""

    instructions: str
    input_fields: list[dict[str, Any]]
    output_fields: list[dict[str, Any]]
    module_kind: str = ModuleKind.PREDICT
    lm_defaults: dict[str, Any] = field(default_factory=dict)
    compiled_state: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "instructions": self.instructions,
            "input_fields": self.input_fields,
            "output_fields": self.output_fields,
            "module_kind": self.module_kind,
            "lm_defaults": self.lm_defaults,
            "compiled_state": self.compiled_state,
        }

    @property
    def content_hash(self) -> str:
        return content_hash(self.as_dict())


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(behaviour: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of everything that defines a version's behaviour."""
    keys = ("instructions", "input_fields", "output_fields", "module_kind")
    document = {key: behaviour[key] for key in keys}
    document["lm_defaults"] = behaviour.get("lm_defaults") or {}
    document["compiled_state"] = behaviour.get("compiled_state")
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def name_problem(name: Any, *, what: str = "A signature name") -> str | None:
    """Why ``name`` is not a valid signature or alias name, or None when it is."""
    if not isinstance(name, str) or not name:
        return f"{what} must be a non-empty string."
    if len(name) > NAME_MAX_LENGTH:
        return f"{what} must be at most {NAME_MAX_LENGTH} characters."
    if not NAME_PATTERN.match(name):
        return (
            f"{what} must start with a lowercase letter and contain only lowercase letters, "
            "digits and underscores (like `qa` or `summarize_v2`)."
        )
    return None


def alias_name_problem(name: Any) -> str | None:
    problem = name_problem(name, what="An alias name")
    if problem:
        return problem
    if len(name) > ALIAS_MAX_LENGTH:
        return f"An alias name must be at most {ALIAS_MAX_LENGTH} characters."
    if name == LATEST:
        return "`latest` is implicit (always the newest version) and cannot be set."
    return None


def tags_normalize(tags: Any) -> list[str]:
    """Tags as a sorted list of distinct, trimmed, lowercase strings."""
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidSpec({"tags": ["Tags must be a list of strings."]})
    if any("\x00" in tag for tag in tags):
        raise InvalidSpec({"tags": ["Tags must not contain NUL characters."]})
    cleaned = sorted({tag.strip().lower() for tag in tags if tag.strip()})
    if len(cleaned) > MAX_TAGS:
        raise InvalidSpec({"tags": [f"At most {MAX_TAGS} tags."]})
    too_long = [tag for tag in cleaned if len(tag) > TAG_MAX_LENGTH]
    if too_long:
        raise InvalidSpec({"tags": [f"Tags must be at most {TAG_MAX_LENGTH} characters."]})
    return cleaned


def text_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored as text, as a predicate ("must be ..."), or None."""
    if not isinstance(value, str):
        return "must be a string."
    if "\x00" in value:  # PostgreSQL cannot store NUL characters in text
        return "must not contain NUL characters."
    return None


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


def field_name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "A field name must be a non-empty string."
    if len(name) > FIELD_NAME_MAX_LENGTH:
        return f"A field name must be at most {FIELD_NAME_MAX_LENGTH} characters."
    if not name.isidentifier() or not name.isascii():
        return f"`{name}` is not a valid Python identifier."
    if keyword.iskeyword(name):
        return f"`{name}` is a Python keyword."
    if name.startswith("_"):
        return f"`{name}` starts with an underscore; DSPy treats such names as private."
    if name in RESERVED_FIELD_NAMES or name.startswith(RESERVED_FIELD_PREFIXES):
        return f"`{name}` is reserved by DSPy."
    return None


def _optional_text(value: Any, *, label: str, max_length: int) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    problem = text_problem(value)
    if problem:
        return None, f"The {label} {problem}"
    if len(value) > max_length:
        return None, f"The {label} must be at most {max_length} characters."
    return value, None


def _field_normalize(raw: Any, *, seen: set[str]) -> tuple[dict | None, dict[str, list[str]]]:
    """One field spec, normalised, or the errors keyed by the spec's own keys."""
    if not isinstance(raw, dict):
        return None, {"non_field_errors": ["A field must be an object with `name` and `type`."]}
    errors: dict[str, list[str]] = {}
    allowed = {"name", "type", "description", "prefix", "choices"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        errors["non_field_errors"] = [
            f"Unknown key(s) {', '.join(unknown)}; a field has {', '.join(sorted(allowed))}."
        ]

    name = raw.get("name")
    problem = field_name_problem(name)
    if problem is None and name in seen:
        problem = f"`{name}` is used twice; inputs and outputs share one namespace."
    if problem:
        errors["name"] = [problem]
    elif isinstance(name, str):
        seen.add(name)

    field_type = raw.get("type", None)
    if field_type not in FieldType.values:
        shown = field_type if isinstance(field_type, str) else json.dumps(field_type)
        errors["type"] = [f"Unknown type `{shown}`; use one of {', '.join(FieldType.values)}."]

    description, problem = _optional_text(
        raw.get("description"), label="description", max_length=DESCRIPTION_MAX_LENGTH
    )
    if problem:
        errors["description"] = [problem]
    prefix, problem = _optional_text(
        raw.get("prefix"), label="prefix", max_length=PREFIX_MAX_LENGTH
    )
    if problem:
        errors["prefix"] = [problem]

    choices = raw.get("choices")
    has_choices = field_type in FieldType.values and RULES[field_type].has_choices
    if has_choices:
        problem = _choices_problem(choices)
        if problem:
            errors["choices"] = [problem]
    elif choices is not None:
        errors["choices"] = ["Only a `literal` field has choices."]

    if errors:
        return None, errors
    normalized = {
        "name": name,
        "type": field_type,
        "description": (description or "").strip(),
        "prefix": prefix or None,
    }
    if has_choices:
        normalized["choices"] = list(choices)
    return normalized, {}


def _choices_problem(choices: Any) -> str | None:
    if not isinstance(choices, list) or not choices:
        return "A `literal` field needs `choices`: a non-empty list of strings."
    if not all(isinstance(choice, str) and choice for choice in choices):
        return "Each choice must be a non-empty string."
    if any("\x00" in choice for choice in choices):
        return "A choice must not contain NUL characters."
    if len(set(choices)) != len(choices):
        return "The choices must be distinct."
    if len(choices) > MAX_CHOICES:
        return f"At most {MAX_CHOICES} choices."
    if any(len(choice) > CHOICE_MAX_LENGTH for choice in choices):
        return f"Each choice must be at most {CHOICE_MAX_LENGTH} characters."
    return None


def _fields_normalize(
    raw: Any, *, role: str, seen: set[str]
) -> tuple[list[dict], list[dict] | list[str] | None]:
    if not isinstance(raw, list):
        return [], [f"The {role} fields must be a list of field objects."]
    if not raw:
        return [], [f"A signature needs at least one {role} field."]
    if len(raw) > MAX_FIELDS:
        return [], [f"At most {MAX_FIELDS} {role} fields."]
    normalized, item_errors = [], []
    for item in raw:
        spec, errors = _field_normalize(item, seen=seen)
        item_errors.append(errors)
        if spec is not None:
            normalized.append(spec)
    return normalized, (item_errors if any(item_errors) else None)


def _lm_defaults_normalize(raw: Any) -> tuple[dict, dict | None]:
    normalized, problems = generation_settings_check(raw, allowed=LM_DEFAULT_KEYS)
    errors = {key: [problem["message"] for problem in found] for key, found in problems.items()}
    return normalized, (errors or None)


def _compiled_state_problem(state: Any) -> str | None:
    if state is None:
        return None
    if not isinstance(state, dict) or not state:
        return "The compiled state must be a DSPy state object (from `module.dump_state()`)."
    try:
        canonical_json(state)
    except (TypeError, ValueError):
        return "The compiled state must be plain JSON."
    if _contains_nul(state):
        return "The compiled state must not contain NUL characters."
    return None


def version_spec_validate(data: Any) -> VersionSpec:
    """Validate and normalise a version spec, raising :class:`InvalidSpec` with every problem.

    This checks the shape; whether a compiled state loads into the module it names is checked
    by ``registry.services.versions.version_spec_check`` (it needs DSPy).
    """
    if not isinstance(data, dict):
        raise InvalidSpec({"non_field_errors": ["A version spec must be a JSON object."]})
    errors: dict[str, Any] = {}

    instructions = data.get("instructions")
    if not isinstance(instructions, str) or not instructions.strip():
        errors["instructions"] = ["Instructions are required: tell the model what the task is."]
    elif len(instructions) > INSTRUCTIONS_MAX_LENGTH:
        errors["instructions"] = [
            f"Instructions must be at most {INSTRUCTIONS_MAX_LENGTH} characters."
        ]
    elif "\x00" in instructions:
        errors["instructions"] = ["Instructions must not contain NUL characters."]

    seen: set[str] = set()
    input_fields, problems = _fields_normalize(data.get("input_fields"), role="input", seen=seen)
    if problems:
        errors["input_fields"] = problems
    output_fields, problems = _fields_normalize(data.get("output_fields"), role="output", seen=seen)
    if problems:
        errors["output_fields"] = problems

    module_kind = data.get("module_kind") or ModuleKind.PREDICT
    if module_kind not in ModuleKind.values:
        errors["module_kind"] = [
            f"Unknown module kind `{module_kind}`; use one of {', '.join(ModuleKind.values)}."
        ]

    lm_defaults, problems = _lm_defaults_normalize(data.get("lm_defaults"))
    if problems:
        errors["lm_defaults"] = problems

    compiled_state = data.get("compiled_state")
    problem = _compiled_state_problem(compiled_state)
    if problem:
        errors["compiled_state"] = [problem]

    if errors:
        raise InvalidSpec(errors)
    return VersionSpec(
        instructions=instructions.strip(),
        input_fields=input_fields,
        output_fields=output_fields,
        module_kind=str(module_kind),
        lm_defaults=lm_defaults,
        compiled_state=compiled_state,
    )
