"""Admin console for the registry.

Signatures are edited (description, tags); versions are never edited: a saved version is shown
read-only, and "duplicate as draft" opens a form prefilled from it that saves a new version.
Aliases move through a form that calls the same row-locked service as the API. The forms live
in ``registry.forms``, the draft, diff and alias pages in ``registry.admin_views``.
"""

from functools import partial

from django.contrib import admin, messages
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from registry import selectors
from registry.admin_views import (
    pretty_json,
    signature_diff_view,
    signature_new_version_view,
    version_alias_view,
)
from registry.forms import LatestRowsFormSet, SignatureForm
from registry.models import Alias, AliasChange, Signature, SignatureVersion
from registry.services.signatures import signature_create, signature_update
from registry.specs import ModuleKind

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
            signature_update(signature=obj, description=obj.description, tags=obj.tags)
        else:
            created = signature_create(
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
                self.admin_site.admin_view(partial(signature_new_version_view, model_admin=self)),
                name="registry_signature_new_version",
            ),
            path(
                "<int:pk>/diff/",
                self.admin_site.admin_view(partial(signature_diff_view, model_admin=self)),
                name="registry_signature_diff",
            ),
            *super().get_urls(),
        ]


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
        return format_html("<pre>{}</pre>", pretty_json(version.lm_defaults))

    @admin.display(description="compiled state")
    def compiled_state_display(self, version: SignatureVersion) -> str:
        if not version.compiled_state:
            return "-"
        return format_html("<pre>{}</pre>", pretty_json(version.compiled_state))

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
                self.admin_site.admin_view(partial(version_alias_view, model_admin=self)),
                name="registry_signatureversion_alias",
            ),
            *super().get_urls(),
        ]
