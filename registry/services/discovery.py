"""Discovery: registering the DSPy signatures and modules that a Python module defines."""

import importlib
import inspect
from types import ModuleType
from typing import Any

import dspy
from django.db import transaction

from registry.exceptions import InvalidSpec, errors_flatten
from registry.models import Signature
from registry.programs import UnsupportedSignature, program_describe, signature_describe, snake_case
from registry.services._common import MaybeUser
from registry.services.library import LoadOutcome
from registry.services.signatures import signature_create
from registry.services.versions import signature_version_create, version_spec_check
from registry.specs import ModuleKind, VersionSpec, name_problem


def _discovery_candidates(module: ModuleType) -> list[tuple[str, Any]]:
    """Module-level signatures, module classes and module instances, each object once."""
    candidates, seen = [], set()
    for attribute, obj in vars(module).items():  # definition order: the first name wins
        if attribute.startswith("_") or id(obj) in seen:
            continue
        is_signature = isinstance(obj, type) and issubclass(obj, dspy.Signature)
        is_module_class = isinstance(obj, type) and issubclass(obj, dspy.Module)
        if (is_signature or is_module_class) and obj.__module__.split(".")[0] == "dspy":
            continue  # DSPy's own classes, imported for use
        if is_signature or is_module_class or isinstance(obj, dspy.Module):
            seen.add(id(obj))
            candidates.append((attribute, obj))
    return candidates


def _discovered_spec(module_name: str, attribute: str, obj: Any) -> tuple[str, dict[str, Any]]:
    """The registry name and spec of one candidate; UnsupportedSignature says why not."""
    if isinstance(obj, type):
        if obj.__module__ != module_name:
            raise UnsupportedSignature(
                f"imported from {obj.__module__}; run discovery on that module instead"
            )
        name = snake_case(obj.__name__)
        if issubclass(obj, dspy.Signature):
            return name, signature_describe(obj) | {"module_kind": ModuleKind.PREDICT}
        required = [
            parameter.name
            for parameter in list(inspect.signature(obj.__init__).parameters.values())[1:]
            if parameter.default is parameter.empty
            and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        ]
        if required:
            raise UnsupportedSignature(
                f"its constructor needs arguments ({', '.join(required)}), so its signature "
                "cannot be read; expose an instance at module level instead"
            )
        try:
            obj = obj()
        except Exception as exc:  # a user's constructor may raise anything
            raise UnsupportedSignature(f"constructing it failed: {exc}") from None
        return name, program_describe(obj)
    return snake_case(attribute), program_describe(obj)


@transaction.atomic
def signatures_discover(
    *, module_path: str, name_prefix: str = "", dry_run: bool = False, user: MaybeUser = None
) -> list[LoadOutcome]:
    """Register every DSPy signature (and readable module) defined in a Python module.

    Signature classes run with Predict; a module class with a no-argument constructor, or a
    module instance, is registered with its own module kind, signature and demos. A changed
    one becomes a new version; an unchanged one is left alone; anything the registry cannot
    represent is skipped with the reason. ``dry_run`` reports without writing.
    """
    module = importlib.import_module(module_path)
    outcomes = []
    for attribute, obj in _discovery_candidates(module):
        try:
            name, described = _discovered_spec(module.__name__, attribute, obj)
        except UnsupportedSignature as exc:
            outcomes.append(LoadOutcome(attribute, "skipped", str(exc)))
            continue
        name = f"{name_prefix}{name}"
        problem = name_problem(name)
        if problem:
            outcomes.append(LoadOutcome(attribute, "skipped", problem))
            continue
        try:
            spec = version_spec_check(name=name, data=described)
        except InvalidSpec as exc:
            outcomes.append(LoadOutcome(name, "skipped", "; ".join(errors_flatten(exc.errors))))
            continue
        outcomes.append(_discovered_register(module_path, attribute, name, spec, user=user))
    if dry_run:
        transaction.set_rollback(True)
    return outcomes


def _discovered_register(
    module_path: str, attribute: str, name: str, spec: VersionSpec, *, user: MaybeUser
) -> LoadOutcome:
    source = f"{module_path}.{attribute}"
    signature = Signature.objects.filter(name=name).first()
    if signature is None:
        signature = signature_create(
            name=name,
            description=f"Discovered in `{source}`.",
            tags=["discovered"],
            author=user,
        )
        version = signature_version_create(
            signature=signature, spec=spec, changelog=f"Discovered in {source}.", author=user
        ).version
        return LoadOutcome(name, "created", f"version 1 from {source}", version)
    result = signature_version_create(
        signature=signature, spec=spec, changelog=f"Changed in {source}.", author=user
    )
    if result.created:
        return LoadOutcome(name, "new_version", f"version {result.version.number}", result.version)
    return LoadOutcome(
        name, "unchanged", f"same as latest version {result.version.number}", result.version
    )
