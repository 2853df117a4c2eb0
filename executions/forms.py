"""Forms of the "Try it" pages (``executions.admin_views``): a version's inputs and how to run it.

The forms only shape what an editor types into the values an execute request carries; the
same validation as the API's (``registry.inputs``, ``execution_config_validate``) decides.
"""

from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator

from core.generation import MAX_TOKENS_MIN, TEMPERATURE_MAX, TEMPERATURE_MIN
from providers.exceptions import NoProviderConfigured
from providers.selectors import provider_get_default, provider_list
from registry.field_types import FieldType


class LinesField(forms.CharField):
    """A list of strings typed one per line; blank lines are dropped."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


def _literal_field(spec: dict[str, Any], **options: Any) -> forms.Field:
    return forms.ChoiceField(choices=[(choice, choice) for choice in spec["choices"]], **options)


# The form field each field type is typed into. A new FieldType member needs an entry here (a
# test checks that every member has one).
INPUT_FORM_FIELDS: dict[str, Callable[..., forms.Field]] = {
    # Not required and not stripped: an empty string is a valid `str` input, as in the API.
    FieldType.STR: lambda spec, **options: forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        **options,
    ),
    FieldType.INT: lambda spec, **options: forms.IntegerField(**options),
    FieldType.FLOAT: lambda spec, **options: forms.FloatField(**options),
    # An unticked box is `false`, never a missing input.
    FieldType.BOOL: lambda spec, **options: forms.BooleanField(required=False, **options),
    FieldType.LIST_STR: lambda spec, **options: LinesField(
        required=False, help_text="One item per line.", **options
    ),
    FieldType.DICT: lambda spec, **options: forms.JSONField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="A JSON object.",
        **options,
    ),
    FieldType.LITERAL: _literal_field,
}


class TryItInputsForm(forms.Form):
    """One form field per input field of a version (saved or a draft), typed by its type."""

    def __init__(self, *args: Any, input_fields: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, prefix="inputs", **kwargs)
        for spec in input_fields:
            options = {"label": spec["name"]}
            if spec.get("description") and spec["type"] not in (
                FieldType.LIST_STR,
                FieldType.DICT,
            ):
                options["help_text"] = spec["description"]
            self.fields[spec["name"]] = INPUT_FORM_FIELDS[spec["type"]](spec, **options)


class TryItRunForm(forms.Form):
    """Where and how to run: an enabled provider, and optional generation settings within the
    bounds an execute request has (`core.generation`, `EXECUTIONS_MAX_TOKENS_LIMIT`)."""

    provider = forms.ChoiceField(help_text="Its fallbacks answer if it fails, as in the API.")
    temperature = forms.FloatField(
        required=False, min_value=TEMPERATURE_MIN, max_value=TEMPERATURE_MAX
    )
    max_tokens = forms.IntegerField(required=False, min_value=MAX_TOKENS_MIN)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, prefix="run", **kwargs)
        names = list(provider_list(enabled=True).values_list("name", flat=True))
        self.fields["provider"].choices = [(name, name) for name in names]
        try:
            self.fields["provider"].initial = provider_get_default().name
        except NoProviderConfigured:
            self.fields["provider"].help_text = "No provider is enabled: add one first."
        limit = settings.EXECUTIONS_MAX_TOKENS_LIMIT
        max_tokens = self.fields["max_tokens"]
        max_tokens.max_value = limit
        max_tokens.validators.append(MaxValueValidator(limit))
        max_tokens.widget.attrs["max"] = limit

    def config(self) -> dict[str, Any]:
        """The generation settings typed in, as an execute request's `config`."""
        return {
            key: self.cleaned_data[key]
            for key in ("temperature", "max_tokens")
            if self.cleaned_data.get(key) is not None
        }
