"""The bridge between stored specs and real DSPy objects, in both directions.

``program_build`` turns a version's behaviour into a runnable ``dspy.Module``;
``program_describe`` and ``signature_describe`` read a DSPy module or signature back into a
spec (discovery uses them, and the round-trip tests prove the two agree).
"""

import copy
import re
import typing
from typing import Any

import dspy
from dspy.signatures.signature import infer_prefix

from registry.exceptions import InvalidSpec
from registry.field_types import FieldType, field_python_type, field_type_of
from registry.specs import ModuleKind

# The module class each kind runs with. A new kind: a ModuleKind member and an entry here.
MODULE_CLASSES: dict[str, type[dspy.Module]] = {
    ModuleKind.PREDICT: dspy.Predict,
    ModuleKind.CHAIN_OF_THOUGHT: dspy.ChainOfThought,
}
# Output fields a module adds to the signature it is given (not part of the stored spec).
MODULE_ADDED_OUTPUTS: dict[str, tuple[str, ...]] = {
    ModuleKind.PREDICT: (),
    ModuleKind.CHAIN_OF_THOUGHT: ("reasoning",),
}


class UnsupportedSignature(ValueError):
    """A DSPy signature or module that the registry's closed type set cannot represent."""


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part) or "Signature"


def _dspy_field(field: dict[str, Any], *, role: str):
    make = dspy.InputField if role == "input" else dspy.OutputField
    info = make(desc=field["description"]) if field["description"] else make()
    if field.get("prefix"):
        # DSPy 3.4 deprecates the `prefix=` argument (it warns) yet still renders and saves
        # the prefix from the field's extra data, which is where a given prefix goes.
        info.json_schema_extra["prefix"] = field["prefix"]
    return info


def signature_class_build(*, name: str, behaviour: dict[str, Any]) -> type[dspy.Signature]:
    fields: dict[str, tuple[Any, Any]] = {}
    for role in ("input", "output"):
        for field in behaviour[f"{role}_fields"]:
            fields[field["name"]] = (field_python_type(field), _dspy_field(field, role=role))
    return dspy.make_signature(
        fields, instructions=behaviour["instructions"], signature_name=_class_name(name)
    )


def program_build(*, name: str, behaviour: dict[str, Any]) -> dspy.Module:
    """A fresh module for a version's behaviour, with its compiled state loaded when present."""
    signature = signature_class_build(name=name, behaviour=behaviour)
    module = MODULE_CLASSES[behaviour["module_kind"]](signature)
    state = behaviour.get("compiled_state")
    if state:
        module.load_state(copy.deepcopy(state))
    return module


def compiled_state_check(*, name: str, behaviour: dict[str, Any]) -> None:
    """Raise InvalidSpec unless the compiled state loads into the module it was saved for."""
    state = behaviour.get("compiled_state")
    if not state:
        return
    if _carries_lm(state):
        raise InvalidSpec(
            {
                "compiled_state": [
                    "The compiled state must not carry an LM configuration (`lm`); the "
                    "provider is chosen when the signature is executed."
                ]
            }
        )
    fresh = program_build(name=name, behaviour=behaviour | {"compiled_state": None})
    expected = fresh.dump_state()
    problem = _state_shape_problem(expected, state)
    if problem is None:
        try:
            fresh.load_state(copy.deepcopy(state))
        except Exception as exc:  # DSPy raises KeyError, TypeError, ValueError... here.
            problem = f"DSPy could not load it: {type(exc).__name__}: {exc}"
    if problem:
        raise InvalidSpec(
            {
                "compiled_state": [
                    f"The compiled state does not fit a {behaviour['module_kind']} module with "
                    f"these fields: {problem}"
                ]
            }
        )


def _carries_lm(state: Any) -> bool:
    if isinstance(state, dict):
        if state.get("lm") is not None:
            return True
        return any(_carries_lm(value) for value in state.values() if isinstance(value, dict))
    return False


def _predictor_states(state: dict, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], dict]:
    """The per-predictor parts of a module state (those with a `signature`), by their path."""
    if "signature" in state:
        return {path: state}
    found: dict[tuple[str, ...], dict] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            found |= _predictor_states(value, (*path, key))
    return found


def _state_shape_problem(expected: dict, given: dict) -> str | None:
    """Compare a state with a fresh module's own: same predictors, same number of fields."""
    wanted, present = _predictor_states(expected), _predictor_states(given)
    if set(wanted) != set(present):
        names = sorted(".".join(path) or "(top level)" for path in wanted)
        return f"expected predictor state(s) at {', '.join(names)}"
    for path, part in wanted.items():
        label = ".".join(path) or "state"
        count = len(part["signature"]["fields"])
        fields = (
            present[path]["signature"].get("fields")
            if isinstance(present[path]["signature"], dict)
            else None
        )
        if not isinstance(fields, list) or len(fields) != count:
            return f"`{label}.signature.fields` must list {count} fields"
        if not isinstance(present[path].get("demos", []), list):
            return f"`{label}.demos` must be a list"
    return None


# Reading DSPy objects back into specs (discovery, round-trip tests).


def _type_spec(annotation: Any) -> dict[str, Any]:
    spec = field_type_of(annotation)
    if spec is not None:
        return spec
    generic = typing.get_origin(annotation) is not None
    shown = repr(annotation) if generic else getattr(annotation, "__name__", repr(annotation))
    raise UnsupportedSignature(
        f"type `{shown}` is outside the registry's types ({', '.join(FieldType.values)})"
    )


def _field_spec(name: str, info: Any) -> dict[str, Any]:
    extra = info.json_schema_extra or {}
    try:
        spec = {"name": name, **_type_spec(info.annotation)}
    except UnsupportedSignature as exc:
        raise UnsupportedSignature(f"field `{name}`: {exc}") from None
    description = extra.get("desc") or ""
    prefix = extra.get("prefix")
    spec["description"] = "" if description == f"${{{name}}}" else description
    spec["prefix"] = None if prefix in (None, f"{infer_prefix(name)}:") else prefix
    return {
        key: spec[key]
        for key in ("name", "type", "description", "prefix", "choices")
        if key in spec
    }


def signature_describe(
    signature: type[dspy.Signature], *, skip_outputs: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The instructions and field specs of a DSPy signature class."""
    return {
        "instructions": signature.instructions,
        "input_fields": [_field_spec(n, i) for n, i in signature.input_fields.items()],
        "output_fields": [
            _field_spec(n, i) for n, i in signature.output_fields.items() if n not in skip_outputs
        ],
    }


def _module_kind(module: dspy.Module) -> str | None:
    for kind, module_class in MODULE_CLASSES.items():
        if type(module) is module_class:
            return kind
    return None


def _module_signature(module: dspy.Module, kind: str) -> type[dspy.Signature]:
    if kind == ModuleKind.CHAIN_OF_THOUGHT:
        return module.predict.signature
    return module.signature


def program_describe(module: dspy.Module) -> dict[str, Any]:
    """The behaviour of a Predict/ChainOfThought module, or of a module that wraps exactly one.

    Demos (compiled state) are kept as ``compiled_state``; instructions come from the module's
    live signature, which is where a compiled state's instructions live too.
    """
    kind = _module_kind(module)
    if kind is None:
        candidates = [
            (path, sub)
            for path, sub in module.named_sub_modules()
            if sub is not module and _module_kind(sub) is not None
        ]
        outermost = [
            (path, sub)
            for path, sub in candidates
            if not any(path.startswith(f"{other}.") for other, _ in candidates)
        ]
        if len(outermost) != 1:
            raise UnsupportedSignature(
                f"it holds {len(outermost)} Predict/ChainOfThought modules; the registry "
                "stores one signature per entry, so register their signatures instead"
            )
        module = outermost[0][1]
        kind = _module_kind(module)
    signature = _module_signature(module, kind)
    description = signature_describe(signature, skip_outputs=MODULE_ADDED_OUTPUTS[kind])
    state = module.dump_state()
    has_demos = any(part.get("demos") for part in _predictor_states(state).values())
    return description | {
        "module_kind": kind,
        "lm_defaults": {},
        "compiled_state": _without_lm(state) if has_demos else None,
    }


def _without_lm(state: dict) -> dict:
    return {
        key: (_without_lm(value) if isinstance(value, dict) else (None if key == "lm" else value))
        for key, value in state.items()
    }


def snake_case(name: str) -> str:
    """``GenerateAnswer`` -> ``generate_answer``; ``QA`` -> ``qa``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return re.sub(r"_+", "_", spaced).strip("_").lower()
