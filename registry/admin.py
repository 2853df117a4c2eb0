"""Admin console for the registry.

Signatures are edited (description, tags); versions are never edited: a saved version is shown
read-only, and "duplicate as draft" opens a form prefilled from it that saves a new version.
Aliases move through a form that calls the same row-locked service as the API.
"""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.forms import formset_factory
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from registry import selectors, services
from registry.exceptions import InvalidSpec, RegistryError, errors_flatten
from registry.models import Alias, AliasChange, Signature, SignatureVersion
from registry.specs import (
    ALIAS_MAX_LENGTH,
    FIELD_NAME_MAX_LENGTH,
    PREFIX_MAX_LENGTH,
    PRODUCTION,
    FieldType,
    ModuleKind,
    tags_normalize,
)

# Filters


class ModuleKindFilter(admin.SimpleListFilter):
    """The latest version's module kind, the one the list shows (SignatureAdmin annotates it)."""

    title = "module kind (latest version)"
    parameter_name = "module_kind"

    def lookups(self, request, model_admin):
        return ModuleKind.choices

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(latest_kind=self.value())
        return queryset


class AliasFilter(admin.SimpleListFilter):
    title = "alias"
    parameter_name = "alias"
    alias_path = "aliases__name"

    def lookups(self, request, model_admin):
        names = Alias.objects.order_by("name").values_list("name", flat=True).distinct()[:50]
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.alias_path: self.value()}).distinct()
        return queryset


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        tags = sorted(
            {tag for tags in Signature.objects.values_list("tags", flat=True) for tag in tags}
        )
        return [(tag, tag) for tag in tags[:100]]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(pk__in=selectors.signature_list(tag=self.value()).values("pk"))
        return queryset


# Signatures


class TagsField(forms.CharField):
    """Tags typed as a comma-separated list."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        try:
            return tags_normalize(text.split(","))
        except InvalidSpec as exc:
            raise forms.ValidationError(exc.errors["tags"]) from exc


class SignatureForm(forms.ModelForm):
    tags = TagsField(required=False, help_text="Comma-separated, e.g. `qa, support`.")

    class Meta:
        model = Signature
        fields = ["name", "description", "tags"]


class LatestRowsFormSet(forms.BaseInlineFormSet):
    """Read-only history rows, newest first, bounded so a long history stays one quick page."""

    limit = 50

    def get_queryset(self):
        return super().get_queryset()[: self.limit]


class VersionColumns:
    """Columns that the version history inline and the version admin both show."""

    @admin.display(description="aliases")
    def aliases_display(self, version: SignatureVersion) -> str:
        return ", ".join(sorted(alias.name for alias in version.aliases.all())) or "-"

    @admin.display(description="hash")
    def short_hash(self, version: SignatureVersion) -> str:
        return version.content_hash[:12]


class VersionInline(VersionColumns, admin.TabularInline):
    model = SignatureVersion
    formset = LatestRowsFormSet
    fields = [
        "version_link",
        "module_kind",
        "aliases_display",
        "short_hash",
        "changelog",
        "author",
        "created_at",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = "version history (newest first, latest 50)"
    ordering = ["-number"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("author", "signature")
            .prefetch_related("aliases")
        )

    @admin.display(description="version")
    def version_link(self, version: SignatureVersion) -> str:
        url = reverse("admin:registry_signatureversion_change", args=[version.pk])
        return format_html('<a href="{}">v{}</a>', url, version.number)


class AliasChangeInline(admin.TabularInline):
    model = AliasChange
    formset = LatestRowsFormSet
    fields = ["alias_name", "from_version", "to_version", "changed_by", "changed_at"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "alias history (latest 50)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("from_version__signature", "to_version__signature", "changed_by")
        )


@admin.register(Signature)
class SignatureAdmin(admin.ModelAdmin):
    form = SignatureForm
    list_display = [
        "name",
        "short_description",
        "tags_display",
        "latest_version",
        "latest_module_kind",
        "aliases_display",
        "updated_at",
    ]
    list_filter = [ModuleKindFilter, AliasFilter, TagFilter]
    search_fields = ["name", "description", "tags"]
    # The name first, also once it is read-only (read-only fields would otherwise come last).
    fields = ["name", "description", "tags", "created_by", "created_at", "updated_at"]
    readonly_fields = ["created_by", "created_at", "updated_at"]
    inlines = [VersionInline, AliasChangeInline]
    list_per_page = 50

    def get_queryset(self, request):
        latest = SignatureVersion.objects.filter(signature=OuterRef("pk")).order_by("-number")
        return (
            super()
            .get_queryset(request)
            .annotate(
                latest_number=Max("versions__number"),
                latest_kind=Subquery(latest.values("module_kind")[:1]),
                version_count=Count("versions", distinct=True),
            )
            .prefetch_related("aliases__version")
        )

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            # Shown read-only, the tags read as the form's text rather than a JSON list.
            return ["tags_display" if name == "tags" else name for name in fields]
        return fields

    def get_readonly_fields(self, request, obj=None):
        # The name is what clients execute by: fixed once created.
        return [*self.readonly_fields, "name"] if obj else self.readonly_fields

    def has_delete_permission(self, request, obj=None) -> bool:
        # Versions are kept forever, so only a signature without versions can go.
        if obj is not None and obj.versions.exists():
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="description")
    def short_description(self, signature: Signature) -> str:
        text = signature.description
        return text if len(text) <= 80 else f"{text[:77]}..."

    @admin.display(description="tags")
    def tags_display(self, signature: Signature) -> str:
        return ", ".join(signature.tags)

    @admin.display(description="latest", ordering="latest_number")
    def latest_version(self, signature: Signature) -> int | None:
        return signature.latest_number

    @admin.display(description="module kind", ordering="latest_kind")
    def latest_module_kind(self, signature: Signature) -> str | None:
        return signature.latest_kind

    @admin.display(description="aliases")
    def aliases_display(self, signature: Signature) -> str:
        return ", ".join(
            f"{alias.name} → v{alias.version.number}" for alias in signature.aliases.all()
        )

    def save_model(self, request, obj: Signature, form, change: bool) -> None:
        if change:
            services.signature_update(signature=obj, description=obj.description, tags=obj.tags)
        else:
            created = services.signature_create(
                name=obj.name, description=obj.description, tags=obj.tags, author=request.user
            )
            obj.pk = created.pk
            obj._state.adding = False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The page's `original` comes from get_queryset, so it carries `version_count`.
        extra_context = (extra_context or {}) | {
            "can_add_version": request.user.has_perm("registry.add_signatureversion"),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path(
                "<int:pk>/new-version/",
                self.admin_site.admin_view(self.new_version_view),
                name="registry_signature_new_version",
            ),
            path(
                "<int:pk>/diff/",
                self.admin_site.admin_view(self.diff_view),
                name="registry_signature_diff",
            ),
            *super().get_urls(),
        ]

    def new_version_view(self, request: HttpRequest, pk: int) -> HttpResponse:
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
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"New version of {signature.name}",
            "signature": signature,
            "source": source,
            "draft": draft,
            "rows": rows,
        }
        return TemplateResponse(request, "admin/registry/signature/new_version.html", context)

    def diff_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Compare two versions of a signature (`?old=<number>&new=<number>`)."""
        signature = get_object_or_404(Signature, pk=pk)
        if not self.has_view_or_change_permission(request, signature):
            raise PermissionDenied
        numbers = list(signature.versions.order_by("number").values_list("number", flat=True))
        if not numbers:
            self.message_user(request, "This signature has no versions yet.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:registry_signature_change", args=[pk]))
        new_number = _number(request.GET.get("new"), default=numbers[-1])
        old_number = _number(
            request.GET.get("old"), default=numbers[-2] if len(numbers) > 1 else numbers[-1]
        )
        try:
            old = selectors.signature_version_get(signature=signature, number=old_number)
            new = selectors.signature_version_get(signature=signature, number=new_number)
        except RegistryError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:registry_signature_diff", args=[pk]))
        diff = selectors.signature_version_diff(old=old, new=new)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{signature.name}: v{old.number} → v{new.number}",
            "signature": signature,
            "numbers": numbers,
            "diff": diff,
            "changes": [
                (key, _pretty(before), _pretty(after))
                for key, (before, after) in diff.changes.items()
            ],
        }
        return TemplateResponse(request, "admin/registry/signature/diff.html", context)


def _number(value: str | None, *, default: int | None) -> int | None:
    # isdigit() alone also accepts digits such as "²" that int() refuses.
    return int(value) if value and value.isascii() and value.isdigit() else default


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


# The draft form: a new version from a prefilled copy of an existing one.


class OptionalJSONField(forms.JSONField):
    def prepare_value(self, value):
        # No value shows as an empty box rather than JSON's `null`.
        return "" if value is None else super().prepare_value(value)


class VersionDraftForm(forms.Form):
    module_kind = forms.ChoiceField(choices=ModuleKind.choices)
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 5, "cols": 100}))
    temperature = forms.FloatField(required=False, min_value=0, max_value=2)
    max_tokens = forms.IntegerField(required=False, min_value=1)
    compiled_state = OptionalJSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 100}),
        help_text=(
            "DSPy program state (demos, optimised instructions) from `module.dump_state()`. "
            "Clear it when the fields change: it must fit them."
        ),
    )
    changelog = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 100}),
        help_text="What changed and why.",
    )


class FieldRowForm(forms.Form):
    role = forms.ChoiceField(choices=[("input", "input"), ("output", "output")])
    name = forms.CharField(
        required=False, max_length=FIELD_NAME_MAX_LENGTH, widget=forms.TextInput(attrs={"size": 16})
    )
    type = forms.ChoiceField(choices=FieldType.choices)
    description = forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 28}))
    prefix = forms.CharField(
        required=False, max_length=PREFIX_MAX_LENGTH, widget=forms.TextInput(attrs={"size": 12})
    )
    choices = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 16}),
        help_text="Literal only: one choice per line.",
    )


FieldRowFormSet = formset_factory(FieldRowForm, extra=2, can_delete=True)


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


def _draft_save(
    request: HttpRequest, signature: Signature, draft: VersionDraftForm, rows
) -> HttpResponse | None:
    """Save the draft as a new version, or put the spec's errors on the form and return None."""
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
        if values["type"] == FieldType.LITERAL:
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
    try:
        result = services.signature_version_create(
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


def _draft_errors(errors: dict, draft: VersionDraftForm, rows, positions: dict[str, list[int]]):
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
            for field, messages in problems.items():
                for message in messages:
                    draft.add_error(field if field in draft.fields else None, message)
        else:
            for message in errors_flatten(problems):
                draft.add_error(key if key in draft.fields else None, message)


# Versions: read-only records.


@admin.register(SignatureVersion)
class SignatureVersionAdmin(VersionColumns, admin.ModelAdmin):
    list_display = [
        "__str__",
        "signature_link",
        "number",
        "module_kind",
        "aliases_display",
        "short_hash",
        "author",
        "created_at",
    ]
    list_filter = ["module_kind", AliasFilter]
    list_select_related = ["signature", "author"]
    search_fields = ["signature__name", "instructions", "changelog", "content_hash"]
    ordering = ["signature__name", "-number"]
    actions = ["duplicate_as_draft", "set_alias"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "signature_link",
                    "number",
                    "module_kind",
                    "aliases_display",
                    "content_hash",
                    "author",
                    "created_at",
                    "changelog",
                ]
            },
        ),
        (
            "Behaviour",
            {
                "fields": [
                    "instructions_display",
                    "fields_table",
                    "lm_defaults_display",
                    "compiled_state_display",
                ]
            },
        ),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    def get_queryset(self, request) -> QuerySet:
        return super().get_queryset(request).prefetch_related("aliases")

    def has_add_permission(self, request) -> bool:
        return False  # new versions come from the signature's draft form

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # saved versions are immutable

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_draft_permission(self, request) -> bool:
        return request.user.has_perm("registry.add_signatureversion")

    def has_alias_permission(self, request) -> bool:
        return request.user.has_perms(["registry.add_alias", "registry.change_alias"])

    @admin.display(description="signature", ordering="signature__name")
    def signature_link(self, version: SignatureVersion) -> str:
        url = reverse("admin:registry_signature_change", args=[version.signature_id])
        return format_html('<a href="{}">{}</a>', url, version.signature.name)

    @admin.display(description="instructions")
    def instructions_display(self, version: SignatureVersion) -> str:
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', version.instructions)

    @admin.display(description="fields")
    def fields_table(self, version: SignatureVersion) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    role,
                    field["name"],
                    field["type"]
                    + (f" [{', '.join(field['choices'])}]" if field.get("choices") else ""),
                    field.get("description") or "",
                    field.get("prefix") or "",
                )
                for role, fields in (
                    ("input", version.input_fields),
                    ("output", version.output_fields),
                )
                for field in fields
            ),
        )
        return format_html(
            '<table class="registry-fields"><thead><tr><th>role</th><th>name</th><th>type</th>'
            "<th>description</th><th>prefix</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="LM defaults")
    def lm_defaults_display(self, version: SignatureVersion) -> str:
        if not version.lm_defaults:
            return "-"
        return format_html("<pre>{}</pre>", _pretty(version.lm_defaults))

    @admin.display(description="compiled state")
    def compiled_state_display(self, version: SignatureVersion) -> str:
        if not version.compiled_state:
            return "-"
        return format_html("<pre>{}</pre>", _pretty(version.compiled_state))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = (extra_context or {}) | {
            "can_draft": self.has_draft_permission(request),
            "can_alias": self.has_alias_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Duplicate as a draft (saves a new version)", permissions=["draft"])
    def duplicate_as_draft(self, request, queryset):
        version = self._single(request, queryset)
        if version is None:
            return None
        url = reverse("admin:registry_signature_new_version", args=[version.signature_id])
        return HttpResponseRedirect(f"{url}?from={version.number}")

    @admin.action(description="Set or move an alias to this version", permissions=["alias"])
    def set_alias(self, request, queryset):
        version = self._single(request, queryset)
        if version is None:
            return None
        return HttpResponseRedirect(
            reverse("admin:registry_signatureversion_alias", args=[version.pk])
        )

    def _single(self, request, queryset) -> SignatureVersion | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.WARNING)
            return None
        return queryset.select_related("signature").first()

    def get_urls(self):
        return [
            path(
                "<int:pk>/alias/",
                self.admin_site.admin_view(self.alias_view),
                name="registry_signatureversion_alias",
            ),
            *super().get_urls(),
        ]

    def alias_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Point an alias at this version, or remove one of the signature's aliases."""
        if not self.has_alias_permission(request):
            raise PermissionDenied
        version = get_object_or_404(SignatureVersion.objects.select_related("signature"), pk=pk)
        signature = version.signature
        form = AliasForm(request.POST or None)
        if request.method == "POST" and "remove" in request.POST:
            if not request.user.has_perm("registry.delete_alias"):
                raise PermissionDenied
            try:
                services.alias_remove(
                    signature=signature, name=request.POST["remove"], user=request.user
                )
                messages.success(request, f"Removed {signature.name}@{request.POST['remove']}.")
            except RegistryError as exc:
                messages.error(request, str(exc))
            return HttpResponseRedirect(request.path)
        if request.method == "POST" and form.is_valid():
            try:
                result = services.alias_set(
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
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Set an alias on {version}",
            "version": version,
            "form": form,
            "aliases": Alias.objects.filter(signature=signature).select_related("version"),
            "can_remove": request.user.has_perm("registry.delete_alias"),
        }
        return TemplateResponse(request, "admin/registry/signatureversion/alias.html", context)


class AliasForm(forms.Form):
    name = forms.CharField(
        max_length=ALIAS_MAX_LENGTH,
        initial=PRODUCTION,
        help_text="e.g. production, staging. Moving an existing alias repoints it here.",
    )


def _alias_message(request, result: services.AliasSetResult, version: SignatureVersion) -> None:
    label = f"{version.signature.name}@{result.alias.name}"
    if not result.changed:
        messages.info(request, f"{label} already points at v{version.number}.")
    elif result.previous is None:
        messages.success(request, f"Created {label} → v{version.number}.")
    else:
        messages.success(
            request, f"Moved {label} from v{result.previous.number} to v{version.number}."
        )
