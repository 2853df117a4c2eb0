"""The registry admin's own pages: the version draft, the version diff and the alias form.

Each view is a function of the request and the model admin that serves it (for the admin
site's context, permissions and messages); ``registry.admin`` wires them into its URLs.
Writes go through the same services as the API, so the admin obeys the same rules.
"""

import json
from typing import Any

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.forms import BaseFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from registry import selectors
from registry.exceptions import InvalidSpec, RegistryError, errors_flatten
from registry.field_types import RULES
from registry.forms import AliasForm, FieldRowFormSet, VersionDraftForm
from registry.models import Alias, Signature, SignatureVersion
from registry.services.aliases import AliasSetResult, alias_remove, alias_set
from registry.services.versions import signature_version_create
from registry.specs import ModuleKind


def pretty_json(value: Any) -> str:
    """A stored JSON value as the admin shows it: indented, keys sorted, text unescaped."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _number(value: str | None, *, default: int | None) -> int | None:
    # isdigit() alone also accepts digits such as "²" that int() refuses.
    return int(value) if value and value.isascii() and value.isdigit() else default


# The draft form: a new version from a prefilled copy of an existing one.


def signature_new_version_view(
    request: HttpRequest, pk: int, *, model_admin: ModelAdmin
) -> HttpResponse:
    """The draft form: a new version, prefilled from an existing one (`?from=<number>`)."""
    if not request.user.has_perm("registry.add_signatureversion"):
        raise PermissionDenied
    signature = get_object_or_404(Signature, pk=pk)
    source = _draft_source(signature, request.GET.get("from"))
    if request.method == "POST":
        draft = VersionDraftForm(request.POST)
        rows = FieldRowFormSet(request.POST, prefix="fields")
        if draft.is_valid() and rows.is_valid():
            response = _draft_save(request, signature, draft, rows)
            if response is not None:
                return response
    else:
        draft = VersionDraftForm(initial=_draft_initial(source))
        rows = FieldRowFormSet(initial=_rows_initial(source), prefix="fields")
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"New version of {signature.name}",
        "signature": signature,
        "source": source,
        "draft": draft,
        "rows": rows,
    }
    return TemplateResponse(request, "admin/registry/signature/new_version.html", context)


def _draft_source(signature: Signature, value: str | None) -> SignatureVersion | None:
    number = _number(value, default=None)
    if number is not None:
        return get_object_or_404(SignatureVersion, signature=signature, number=number)
    return selectors.signature_version_latest(signature=signature)


def _draft_initial(source: SignatureVersion | None) -> dict[str, Any]:
    if source is None:
        return {"module_kind": ModuleKind.PREDICT}
    return {
        "module_kind": source.module_kind,
        "instructions": source.instructions,
        "temperature": source.lm_defaults.get("temperature"),
        "max_tokens": source.lm_defaults.get("max_tokens"),
        "compiled_state": source.compiled_state,
        "changelog": "",
    }


def _rows_initial(source: SignatureVersion | None) -> list[dict[str, Any]]:
    if source is None:
        return []
    return [
        {
            "role": role,
            "name": field["name"],
            "type": field["type"],
            "description": field.get("description", ""),
            "prefix": field.get("prefix") or "",
            "choices": "\n".join(field.get("choices", [])),
        }
        for role, fields in (("input", source.input_fields), ("output", source.output_fields))
        for field in fields
    ]


def draft_spec(
    draft: VersionDraftForm, rows: BaseFormSet
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """The spec a valid draft form describes, and where each role's fields sit among the rows
    (to put the spec's errors back on them). Saving a draft and trying it ("Try it") read it
    the same way."""
    data = draft.cleaned_data
    positions: dict[str, list[int]] = {"input": [], "output": []}
    fields: dict[str, list[dict]] = {"input": [], "output": []}
    for index, row in enumerate(rows.forms):
        values = row.cleaned_data
        if not values or values.get("DELETE") or not values.get("name"):
            continue
        spec = {
            "name": values["name"].strip(),
            "type": values["type"],
            "description": values["description"],
            "prefix": values["prefix"] or None,
        }
        if RULES[values["type"]].has_choices:
            spec["choices"] = [
                line.strip() for line in values["choices"].splitlines() if line.strip()
            ]
        fields[values["role"]].append(spec)
        positions[values["role"]].append(index)
    lm_defaults = {
        key: data[key] for key in ("temperature", "max_tokens") if data.get(key) is not None
    }
    spec = {
        "instructions": data["instructions"],
        "input_fields": fields["input"],
        "output_fields": fields["output"],
        "module_kind": data["module_kind"],
        "lm_defaults": lm_defaults,
        "compiled_state": data.get("compiled_state") or None,
    }
    return spec, positions


def _draft_save(
    request: HttpRequest, signature: Signature, draft: VersionDraftForm, rows: BaseFormSet
) -> HttpResponse | None:
    """Save the draft as a new version, or put the spec's errors on the form and return None."""
    spec, positions = draft_spec(draft, rows)
    data = draft.cleaned_data
    try:
        result = signature_version_create(
            signature=signature, spec=spec, changelog=data["changelog"], author=request.user
        )
    except InvalidSpec as exc:
        _draft_errors(exc.errors, draft, rows, positions)
        return None
    version = result.version
    if result.created:
        messages.success(request, f"Saved {version}.")
    else:
        messages.warning(
            request, f"Identical to the latest version (v{version.number}): nothing was created."
        )
    return HttpResponseRedirect(
        reverse("admin:registry_signatureversion_change", args=[version.pk])
    )


def _draft_errors(
    errors: dict, draft: VersionDraftForm, rows: BaseFormSet, positions: dict[str, list[int]]
) -> None:
    for key, problems in errors.items():
        if key in ("input_fields", "output_fields"):
            role = key.removesuffix("_fields")
            if problems and all(isinstance(item, dict) for item in problems):
                for position, item in enumerate(problems):
                    row = rows.forms[positions[role][position]]
                    for row_key, row_problems in item.items():
                        target = row_key if row_key in row.fields else None
                        for message in row_problems:
                            row.add_error(target, message)
            else:
                for message in problems:
                    draft.add_error(None, f"{role.capitalize()} fields: {message}")
        elif key == "lm_defaults" and isinstance(problems, dict):
            # Its keys (temperature, max_tokens) are the draft form's own fields.
            for field, field_problems in problems.items():
                for message in field_problems:
                    draft.add_error(field if field in draft.fields else None, message)
        else:
            for message in errors_flatten(problems):
                draft.add_error(key if key in draft.fields else None, message)


# The diff of two versions.


def signature_diff_view(request: HttpRequest, pk: int, *, model_admin: ModelAdmin) -> HttpResponse:
    """Compare two versions of a signature (`?old=<number>&new=<number>`)."""
    signature = get_object_or_404(Signature, pk=pk)
    if not model_admin.has_view_or_change_permission(request, signature):
        raise PermissionDenied
    numbers = list(signature.versions.order_by("number").values_list("number", flat=True))
    if not numbers:
        model_admin.message_user(request, "This signature has no versions yet.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:registry_signature_change", args=[pk]))
    new_number = _number(request.GET.get("new"), default=numbers[-1])
    old_number = _number(
        request.GET.get("old"), default=numbers[-2] if len(numbers) > 1 else numbers[-1]
    )
    try:
        old = selectors.signature_version_get(signature=signature, number=old_number)
        new = selectors.signature_version_get(signature=signature, number=new_number)
    except RegistryError as exc:
        model_admin.message_user(request, str(exc), messages.ERROR)
        return HttpResponseRedirect(reverse("admin:registry_signature_diff", args=[pk]))
    diff = selectors.signature_version_diff(old=old, new=new)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"{signature.name}: v{old.number} → v{new.number}",
        "signature": signature,
        "numbers": numbers,
        "diff": diff,
        "changes": [
            (key, pretty_json(before), pretty_json(after))
            for key, (before, after) in diff.changes.items()
        ],
    }
    return TemplateResponse(request, "admin/registry/signature/diff.html", context)


# The alias form of one version.


def version_alias_view(request: HttpRequest, pk: int, *, model_admin: ModelAdmin) -> HttpResponse:
    """Point an alias at this version, or remove one of the signature's aliases."""
    if not model_admin.has_alias_permission(request):
        raise PermissionDenied
    version = get_object_or_404(SignatureVersion.objects.select_related("signature"), pk=pk)
    signature = version.signature
    form = AliasForm(request.POST or None)
    if request.method == "POST" and "remove" in request.POST:
        if not request.user.has_perm("registry.delete_alias"):
            raise PermissionDenied
        try:
            alias_remove(signature=signature, name=request.POST["remove"], user=request.user)
            messages.success(request, f"Removed {signature.name}@{request.POST['remove']}.")
        except RegistryError as exc:
            messages.error(request, str(exc))
        return HttpResponseRedirect(request.path)
    if request.method == "POST" and form.is_valid():
        try:
            result = alias_set(
                signature=signature,
                name=form.cleaned_data["name"],
                version=version,
                user=request.user,
            )
        except InvalidSpec as exc:
            form.add_error("name", "; ".join(errors_flatten(exc.errors["name"])))
        else:
            _alias_message(request, result, version)
            return HttpResponseRedirect(
                reverse("admin:registry_signatureversion_change", args=[version.pk])
            )
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"Set an alias on {version}",
        "version": version,
        "form": form,
        "aliases": Alias.objects.filter(signature=signature).select_related("version"),
        "can_remove": request.user.has_perm("registry.delete_alias"),
    }
    return TemplateResponse(request, "admin/registry/signatureversion/alias.html", context)


def _alias_message(request: HttpRequest, result: AliasSetResult, version: SignatureVersion) -> None:
    label = f"{version.signature.name}@{result.alias.name}"
    if not result.changed:
        messages.info(request, f"{label} already points at v{version.number}.")
    elif result.previous is None:
        messages.success(request, f"Created {label} → v{version.number}.")
    else:
        messages.success(
            request, f"Moved {label} from v{result.previous.number} to v{version.number}."
        )
