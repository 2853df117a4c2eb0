"""Admin for provider configurations: the fallback list inline, the hardware report a click away.

The API key of an `openai` provider is never shown: only its variable name and whether the
variable is set.
"""

import os

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path

from providers import selectors, services
from providers.models import Provider, ProviderFallback


class FallbackForm(forms.ModelForm):
    class Meta:
        model = ProviderFallback
        fields = ["fallback", "position"]

    def validate_unique(self) -> None:
        # Reordering swaps positions between rows, which row-by-row uniqueness checks would
        # reject; the formset validates the list as a whole and the service rewrites it.
        return


class FallbackFormSet(forms.BaseInlineFormSet):
    def ordered_fallbacks(self) -> list[Provider]:
        rows = [
            form.cleaned_data
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("fallback")
        ]
        rows.sort(key=lambda row: row.get("position") or 0)
        return [row["fallback"] for row in rows]

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        errors = services.provider_fallback_errors(
            provider=self.instance, fallbacks=self.ordered_fallbacks()
        )
        if errors:
            raise ValidationError(errors)


class FallbackInline(admin.TabularInline):
    model = ProviderFallback
    fk_name = "provider"
    form = FallbackForm
    formset = FallbackFormSet
    extra = 1
    ordering = ["position"]
    autocomplete_fields = ["fallback"]
    verbose_name = "fallback"
    verbose_name_plural = "fallbacks (tried in order of position)"


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "model",
        "adapter_value",
        "enabled",
        "fallback_chain",
        "api_key_configured",
        "updated_at",
    ]
    list_filter = ["kind", "enabled", "adapter"]
    search_fields = ["name", "model"]
    readonly_fields = ["api_key_configured", "created_at", "updated_at"]
    inlines = [FallbackInline]
    change_list_template = "providers/admin/change_list.html"
    fieldsets = [
        (None, {"fields": ["name", "kind", "model", "enabled", "adapter"]}),
        ("Generation defaults", {"fields": ["max_tokens", "temperature", "top_p", "timeout_s"]}),
        ("Local (mlx)", {"fields": ["hardware_optimization"]}),
        ("Remote (openai)", {"fields": ["base_url", "api_key_env", "api_key_configured"]}),
        ("Custom engine", {"fields": ["engine_path"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    def get_queryset(self, request) -> QuerySet:
        # The fallback links prefetched, for the list's fallback column.
        return selectors.provider_list()

    @admin.display(description="adapter", ordering="adapter")
    def adapter_value(self, provider: Provider) -> str:
        # The stored value: the labels (in the filter and the form) are too long for a column.
        return provider.adapter

    @admin.display(description="fallbacks")
    def fallback_chain(self, provider: Provider) -> str:
        return " → ".join(link.fallback.name for link in provider.fallback_links.all()) or "-"

    @admin.display(boolean=True, description="API key set")
    def api_key_configured(self, provider: Provider) -> bool | None:
        if not provider.api_key_env:
            return None
        return bool(os.environ.get(provider.api_key_env))

    def save_formset(self, request, form, formset, change) -> None:
        if isinstance(formset, FallbackFormSet):
            # Without committing: it records the added, changed and deleted rows for the
            # admin's change message; the service then rewrites the list as a whole.
            formset.save(commit=False)
            services.provider_set_fallbacks(
                provider=form.instance, fallbacks=formset.ordered_fallbacks()
            )
            return
        super().save_formset(request, form, formset, change)

    def get_urls(self):
        return [
            path(
                "hardware/",
                self.admin_site.admin_view(self.hardware_view),
                name="providers_provider_hardware",
            ),
            *super().get_urls(),
        ]

    def hardware_view(self, request: HttpRequest) -> HttpResponse:
        from providers.hardware import hardware_report

        context = {
            **self.admin_site.each_context(request),
            "title": "Hardware",
            "opts": self.model._meta,
            "report": [
                (key, _report_value(key, value)) for key, value in sorted(hardware_report().items())
            ],
        }
        return TemplateResponse(request, "providers/admin/hardware.html", context)


def _report_value(key: str, value: object) -> str:
    """One value of the hardware report as an operator reads it (the keys stay as in --json)."""
    if key.endswith("_bytes") and isinstance(value, int):
        return f"{filesizeformat(value)} ({value} bytes)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "none"
    return "-" if value is None else str(value)
