"""Forms of the registry's admin console.

The admin classes (``registry.admin``) and its custom views (``registry.admin_views``) take
their forms from here; the forms only shape input, and the services validate the spec.
"""

from django import forms
from django.forms import formset_factory

from registry.exceptions import InvalidSpec
from registry.field_types import FieldType
from registry.models import DatasetSplit, Signature, name_validator
from registry.services.datasets import DatasetFormat
from registry.specs import (
    ALIAS_MAX_LENGTH,
    FIELD_NAME_MAX_LENGTH,
    NAME_MAX_LENGTH,
    PREFIX_MAX_LENGTH,
    PRODUCTION,
    ModuleKind,
    tags_normalize,
)


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


class AliasForm(forms.Form):
    name = forms.CharField(
        max_length=ALIAS_MAX_LENGTH,
        initial=PRODUCTION,
        help_text="e.g. production, staging. Moving an existing alias repoints it here.",
    )


class DatasetUploadForm(forms.Form):
    """The admin's dataset import: the options the API and `registry_dataset_import` take."""

    signature = forms.ModelChoiceField(queryset=Signature.objects.order_by("name"))
    name = forms.CharField(
        max_length=NAME_MAX_LENGTH,
        validators=[name_validator],
        help_text="The dataset's name within the signature, e.g. `starter`.",
    )
    file = forms.FileField(help_text="JSONL (an object per line) or CSV (a header row first).")
    format = forms.ChoiceField(
        choices=[("", "From the file name"), *DatasetFormat.choices], required=False
    )
    split = forms.ChoiceField(
        choices=DatasetSplit.choices,
        initial=DatasetSplit.TRAIN,
        help_text="The split of rows that name none.",
    )
    replace = forms.BooleanField(
        required=False,
        help_text="Replace the examples of an existing dataset of this name, all at once.",
    )
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 80}),
        help_text="Left empty when replacing: the current description is kept.",
    )
    version = forms.CharField(
        required=False,
        max_length=NAME_MAX_LENGTH,
        help_text=(
            "The version number or alias whose fields check the rows; empty: `production`, "
            "else the latest version."
        ),
    )
