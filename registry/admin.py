"""Admin console for the registry.

Signatures are edited (description, tags); versions are never edited: a saved version is shown
read-only, and "duplicate as draft" opens a form prefilled from it that saves a new version.
Aliases move through a form that calls the same row-locked service as the API. The forms live
in ``registry.forms``, the draft, diff and alias pages in ``registry.admin_views``.

Datasets are records too: they change only by an import (the upload page, all or nothing,
through the same service as the API and the command), and are shown read-only with their
first examples and export links. Scores and promotions are read-only logs; a version's scores
are listed on its page.
"""

import json
from functools import partial
from itertools import islice

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import router
from django.db.models import Count, Max, OuterRef, ProtectedError, QuerySet, Subquery
from django.db.models.deletion import Collector
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from registry import selectors
from registry.admin_views import (
    pretty_json,
    signature_diff_view,
    signature_new_version_view,
    version_alias_view,
)
from registry.exceptions import DatasetExists, InvalidDataset, RegistryError
from registry.forms import DatasetUploadForm, LatestRowsFormSet, SignatureForm
from registry.models import (
    Alias,
    AliasChange,
    Dataset,
    DatasetExample,
    Promotion,
    Signature,
    SignatureVersion,
    VersionScore,
)
from registry.services.datasets import (
    MEDIA_TYPES,
    DatasetFormat,
    dataset_delete,
    dataset_export,
    dataset_format_for,
    dataset_import,
)
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


class DatasetColumns:
    """Columns that the signature page's dataset list and the dataset admin both show."""

    @admin.display(description="examples", ordering="example_count")
    def examples_display(self, dataset: Dataset) -> str:
        splits = ", ".join(f"{split} {count}" for split, count in dataset.split_counts.items())
        return f"{dataset.example_count} ({splits})" if splits else str(dataset.example_count)

    @admin.display(description="hash")
    def short_hash(self, dataset: Dataset) -> str:
        return dataset.content_hash[:12]

    @admin.display(description="export")
    def export_links(self, dataset: Dataset) -> str:
        url = reverse("admin:registry_dataset_export", args=[dataset.pk])
        return format_html(
            '<a href="{}?format=jsonl">JSONL</a> · <a href="{}?format=csv">CSV</a>', url, url
        )


class DatasetInline(DatasetColumns, admin.TabularInline):
    model = Dataset
    formset = LatestRowsFormSet
    fields = ["dataset_link", "examples_display", "short_hash", "source", "updated_at"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "datasets (first 50 by name)"
    ordering = ["name"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="dataset")
    def dataset_link(self, dataset: Dataset) -> str:
        url = reverse("admin:registry_dataset_change", args=[dataset.pk])
        return format_html('<a href="{}">{}</a>', url, dataset.name)


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
    inlines = [VersionInline, AliasChangeInline, DatasetInline]
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


class ScoreColumns:
    """Columns that the version page's scores and the score admin both show."""

    @admin.display(description="score (95% CI)", ordering="score")
    def score_display(self, score: VersionScore) -> str:
        if score.ci_low is None or score.ci_high is None:
            return f"{score.score:.3f}"
        return f"{score.score:.3f} [{score.ci_low:.3f}, {score.ci_high:.3f}]"

    @admin.display(description="dataset")
    def dataset_display(self, score: VersionScore) -> str:
        if score.dataset is None:  # deleted since: the hash still names the data
            return f"(deleted) {score.dataset_hash[:12]}"
        url = reverse("admin:registry_dataset_change", args=[score.dataset_id])
        return format_html(
            '<a href="{}">{}</a> {}', url, score.dataset.name, score.dataset_hash[:12]
        )

    @admin.display(description="provider / model")
    def runner_display(self, score: VersionScore) -> str:
        return " / ".join(part for part in (score.provider_name, score.model) if part) or "-"


class VersionScoreInline(ScoreColumns, admin.TabularInline):
    model = VersionScore
    formset = LatestRowsFormSet
    fields = [
        "metric",
        "split",
        "dataset_display",
        "score_display",
        "examples",
        "source",
        "runner_display",
        "reference",
        "recorded_at",
    ]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "scores (newest first, latest 50)"
    ordering = ["-recorded_at", "-id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("dataset")


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
    inlines = [VersionScoreInline]

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


# Datasets: records that change only by an import.


class DatasetExampleFormSet(LatestRowsFormSet):
    limit = 100


def _compact_json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


class DatasetExampleInline(admin.TabularInline):
    model = DatasetExample
    formset = DatasetExampleFormSet
    fields = ["position", "split", "inputs_display", "outputs_display", "accepted_display"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "examples (the first 100, in file order; export for all)"
    ordering = ["position"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        # Whoever may see a dataset may see its examples.
        return request.user.has_perm("registry.view_dataset")

    @admin.display(description="inputs")
    def inputs_display(self, example: DatasetExample) -> str:
        return _compact_json(example.inputs)

    @admin.display(description="expected outputs")
    def outputs_display(self, example: DatasetExample) -> str:
        return _compact_json(example.outputs)

    @admin.display(description="accepted answers")
    def accepted_display(self, example: DatasetExample) -> str:
        return _compact_json(example.accepted) if example.accepted else "-"


@admin.register(Dataset)
class DatasetAdmin(DatasetColumns, admin.ModelAdmin):
    list_display = [
        "__str__",
        "signature_link",
        "name",
        "examples_display",
        "short_hash",
        "source",
        "updated_at",
        "export_links",
    ]
    list_select_related = ["signature"]
    list_filter = ["signature"]
    search_fields = ["name", "signature__name", "content_hash", "source", "description"]
    ordering = ["signature__name", "name"]
    fields = [
        "signature_link",
        "name",
        "description",
        "examples_display",
        "content_hash",
        "source",
        "export_links",
        "created_by",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    inlines = [DatasetExampleInline]
    list_per_page = 50

    def has_add_permission(self, request) -> bool:
        return False  # datasets are added by an import (the upload page)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # examples change only by a re-import, so the hash stays true

    def has_import_permission(self, request) -> bool:
        return request.user.has_perm("registry.add_dataset")

    @admin.display(description="signature", ordering="signature__name")
    def signature_link(self, dataset: Dataset) -> str:
        url = reverse("admin:registry_signature_change", args=[dataset.signature_id])
        return format_html('<a href="{}">{}</a>', url, dataset.signature.name)

    def changelist_view(self, request, extra_context=None):
        extra_context = (extra_context or {}) | {"can_import": self.has_import_permission(request)}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = (extra_context or {}) | {
            "can_import": self.has_import_permission(request)
            and request.user.has_perm("registry.change_dataset")
        }
        return super().change_view(request, object_id, form_url, extra_context)

    # Deleting goes through the service; the confirmation page counts the examples instead
    # of listing each one (Django's default loads and lists every related row).

    def get_deleted_objects(self, objs, request):
        datasets = list(objs)
        examples = sum(dataset.example_count for dataset in datasets)
        summary = [f"{dataset} ({dataset.example_count} examples)" for dataset in datasets]
        collector = Collector(using=router.db_for_write(Dataset))
        protected = []
        try:
            collector.collect(datasets)
        except ProtectedError as exc:
            protected = [str(run) for run in islice(exc.protected_objects, 20)]
        counts = {"datasets": len(datasets), "dataset examples": examples}
        return summary, counts, set(), protected

    def delete_model(self, request, obj: Dataset) -> None:
        dataset_delete(dataset=obj)

    def delete_queryset(self, request, queryset) -> None:
        for dataset in queryset:
            dataset_delete(dataset=dataset)

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="registry_dataset_import",
            ),
            path(
                "<int:pk>/export/",
                self.admin_site.admin_view(self.export_view),
                name="registry_dataset_export",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request):
        """The upload page: an import with the API's options, all or nothing."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = DatasetUploadForm(request.POST, request.FILES)
            if form.is_valid():
                dataset = self._import(request, form)
                if dataset is not None:
                    return HttpResponseRedirect(
                        reverse("admin:registry_dataset_change", args=[dataset.pk])
                    )
        else:
            form = DatasetUploadForm(initial=self._import_initial(request))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import a dataset",
            "form": form,
            "problems": getattr(form, "problems", []),
            "problem_count": getattr(form, "problem_count", 0),
        }
        return TemplateResponse(request, "admin/registry/dataset/import.html", context)

    def _import_initial(self, request) -> dict:
        """A re-import link names the dataset (`?dataset=<pk>`): its signature and name."""
        pk = request.GET.get("dataset", "")
        if pk.isascii() and pk.isdigit():
            dataset = Dataset.objects.filter(pk=int(pk)).first()
            if dataset is not None:
                return {"signature": dataset.signature_id, "name": dataset.name, "replace": True}
        return {}

    def _import(self, request, form: DatasetUploadForm) -> Dataset | None:
        """Import the form's file, or put the problems on the form and return None."""
        data = form.cleaned_data
        upload = data["file"]
        file_format = data["format"] or dataset_format_for(upload.name)
        if file_format is None:
            form.add_error("format", "The file name ends in neither .jsonl nor .csv: choose one.")
            return None
        if data["replace"] and not request.user.has_perm("registry.change_dataset"):
            form.add_error("replace", "Replacing a dataset needs the change_dataset permission.")
            return None
        try:
            dataset = dataset_import(
                signature=data["signature"],
                name=data["name"],
                content=upload,
                format=file_format,
                split=data["split"],
                replace=data["replace"],
                description=data["description"] or None,
                version=data["version"] or None,
                source=f"upload: {upload.name}",
                user=request.user,
            )
        except InvalidDataset as exc:
            form.add_error(None, f"Nothing was imported: {exc.problem_count} problem(s).")
            form.problems = [str(problem) for problem in exc.problems]
            form.problem_count = exc.problem_count
            return None
        except DatasetExists as exc:
            form.add_error("name", str(exc))
            return None
        except RegistryError as exc:
            form.add_error(None, str(exc))
            return None
        messages.success(
            request,
            f"Imported {dataset.example_count} examples into {dataset} "
            f"(content hash {dataset.content_hash[:12]}).",
        )
        return dataset

    def export_view(self, request, pk: int):
        dataset = get_object_or_404(Dataset.objects.select_related("signature"), pk=pk)
        if not self.has_view_permission(request, dataset):
            raise PermissionDenied
        file_format = request.GET.get("format") or DatasetFormat.JSONL
        if file_format not in DatasetFormat.values:
            file_format = DatasetFormat.JSONL
        response = StreamingHttpResponse(
            dataset_export(dataset=dataset, format=file_format),
            content_type=f"{MEDIA_TYPES[file_format]}; charset=utf-8",
        )
        filename = f"{dataset.signature.name}-{dataset.name}.{file_format}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


# Scores and promotions: read-only logs.


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(VersionScore)
class VersionScoreAdmin(ScoreColumns, ReadOnlyAdmin):
    list_display = [
        "signature_version",
        "metric",
        "split",
        "dataset_display",
        "score_display",
        "examples",
        "source",
        "runner_display",
        "reference",
        "recorded_at",
    ]
    list_select_related = ["signature_version__signature", "dataset"]
    list_filter = ["source", "split", "metric"]
    search_fields = ["signature_version__signature__name", "metric", "reference", "dataset_hash"]
    date_hierarchy = "recorded_at"
    fields = [
        "signature_version",
        "metric",
        "split",
        "dataset_display",
        "dataset_hash",
        "score_display",
        "examples",
        "source",
        "provider_name",
        "model",
        "reference",
        "recorded_at",
    ]
    readonly_fields = fields


@admin.register(Promotion)
class PromotionAdmin(ReadOnlyAdmin):
    list_display = [
        "__str__",
        "from_version",
        "to_version",
        "scores_display",
        "metric",
        "split",
        "forced",
        "promoted_by",
        "promoted_at",
    ]
    list_select_related = [
        "signature",
        "from_version__signature",
        "to_version__signature",
        "promoted_by",
    ]
    list_filter = ["forced", "alias_name"]
    search_fields = ["signature__name", "metric", "reason", "dataset_hash"]
    date_hierarchy = "promoted_at"
    fields = [
        "signature",
        "alias_name",
        "from_version",
        "to_version",
        "from_score",
        "to_score",
        "dataset_hash",
        "split",
        "metric",
        "forced",
        "reason",
        "promoted_by",
        "promoted_at",
    ]
    readonly_fields = fields

    @admin.display(description="scores (from → to)")
    def scores_display(self, promotion: Promotion) -> str:
        def shown(score: float | None) -> str:
            return "-" if score is None else f"{score:.3f}"

        return f"{shown(promotion.from_score)} → {shown(promotion.to_score)}"
