"""Signatures, their immutable versions, and the aliases that point at versions.

Works on PostgreSQL and on the embedded SQLite database: lists (tags, fields) are JSON.
"""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from registry.exceptions import ImmutableVersionError
from registry.specs import (
    ALIAS_MAX_LENGTH,
    LATEST,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    ModuleKind,
    content_hash,
)

name_validator = RegexValidator(
    NAME_PATTERN,
    "Use a lowercase letter first, then lowercase letters, digits and underscores.",
)


class Signature(models.Model):
    """A named task (``qa``, ``summarize``) whose behaviour is defined by its versions."""

    name = models.CharField(
        max_length=NAME_MAX_LENGTH,
        unique=True,
        validators=[name_validator],
        help_text="Identifier-like name that clients execute by, e.g. `qa`. Cannot change.",
    )
    description = models.TextField(blank=True, help_text="What the signature is for.")
    tags = models.JSONField(default=list, blank=True, help_text="List of lowercase tags.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SignatureVersionQuerySet(models.QuerySet):
    """Versions are append-only: bulk changes are refused like single ones."""

    def update(self, **kwargs):
        raise ImmutableVersionError("Signature versions are immutable; add a new version instead.")

    def delete(self):
        raise ImmutableVersionError("Signature versions are immutable and cannot be deleted.")


class SignatureVersion(models.Model):
    """One immutable revision of a signature. Editing a signature means adding a version."""

    signature = models.ForeignKey(Signature, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField(help_text="1, 2, 3 ... per signature.")
    instructions = models.TextField()
    input_fields = models.JSONField(help_text="Ordered list of field specs.")
    output_fields = models.JSONField(help_text="Ordered list of field specs.")
    module_kind = models.CharField(
        max_length=40, choices=ModuleKind.choices, default=ModuleKind.PREDICT
    )
    lm_defaults = models.JSONField(
        default=dict, blank=True, help_text="Optional `temperature` and `max_tokens`."
    )
    compiled_state = models.JSONField(
        null=True, blank=True, help_text="DSPy program state (demos, instructions) as JSON."
    )
    content_hash = models.CharField(
        max_length=64, editable=False, help_text="sha256 of everything that defines behaviour."
    )
    changelog = models.TextField(blank=True, help_text="What changed and why.")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = SignatureVersionQuerySet.as_manager()

    class Meta:
        ordering = ["signature_id", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["signature", "number"], name="registry_version_number_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(number__gte=1), name="registry_version_number_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.signature.name} v{self.number}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableVersionError(
                f"{self} is immutable; save the change as a new version instead."
            )
        self.content_hash = content_hash(self.behaviour())
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableVersionError(f"{self} is immutable and cannot be deleted.")

    def behaviour(self) -> dict:
        """Everything that defines what this version does (what the content hash covers)."""
        return {
            "instructions": self.instructions,
            "input_fields": self.input_fields,
            "output_fields": self.output_fields,
            "module_kind": self.module_kind,
            "lm_defaults": self.lm_defaults or {},
            "compiled_state": self.compiled_state,
        }

    @property
    def fields(self) -> list[dict]:
        return [*self.input_fields, *self.output_fields]


class Alias(models.Model):
    """A movable label (``production``, ``staging``) on one version of a signature."""

    signature = models.ForeignKey(Signature, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=ALIAS_MAX_LENGTH, validators=[name_validator])
    version = models.ForeignKey(SignatureVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["signature_id", "name"]
        verbose_name_plural = "aliases"
        constraints = [
            models.UniqueConstraint(fields=["signature", "name"], name="registry_alias_unique"),
            models.CheckConstraint(
                condition=~models.Q(name=LATEST), name="registry_alias_not_latest"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.signature.name}@{self.name}"


class AliasChange(models.Model):
    """The audit trail of alias moves: who pointed which alias from where to where."""

    signature = models.ForeignKey(Signature, on_delete=models.CASCADE, related_name="alias_changes")
    alias_name = models.CharField(max_length=ALIAS_MAX_LENGTH)
    from_version = models.ForeignKey(
        SignatureVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_version = models.ForeignKey(
        SignatureVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty when the alias was removed.",
    )
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at", "-id"]
        indexes = [
            models.Index(
                fields=["signature", "alias_name", "-id"], name="registry_alias_change_idx"
            )
        ]

    def __str__(self) -> str:
        source = f"v{self.from_version.number}" if self.from_version else "(none)"
        target = f"v{self.to_version.number}" if self.to_version else "(removed)"
        return f"{self.signature.name}@{self.alias_name}: {source} -> {target}"


class DatasetSplit(models.TextChoices):
    TRAIN = "train", "Train"
    DEV = "dev", "Dev"
    TEST = "test", "Test"


class Dataset(models.Model):
    """Labelled examples for one signature: its input fields and the expected outputs.

    An import replaces all of a dataset's examples at once (all or nothing), so the content
    hash always names exactly the examples present; evaluation results keep the hash they
    ran on.
    """

    signature = models.ForeignKey(Signature, on_delete=models.PROTECT, related_name="datasets")
    name = models.CharField(max_length=NAME_MAX_LENGTH, validators=[name_validator])
    description = models.TextField(blank=True)
    content_hash = models.CharField(
        max_length=64, editable=False, help_text="sha256 of every example, in order."
    )
    example_count = models.PositiveIntegerField(default=0)
    split_counts = models.JSONField(
        default=dict, blank=True, help_text='Examples per split, e.g. {"train": 80, "dev": 40}.'
    )
    source = models.CharField(
        max_length=200, blank=True, help_text="Where the examples came from (file, library)."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["signature_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["signature", "name"], name="registry_dataset_unique")
        ]

    def __str__(self) -> str:
        return f"{self.signature.name}/{self.name}"


class DatasetExample(models.Model):
    """One labelled example: input values, expected output values, and for text outputs
    optionally several accepted answers (`{"answer": ["Paris", "Paris, France"]}`)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="examples")
    position = models.PositiveIntegerField(help_text="Row number in the imported file, from 1.")
    split = models.CharField(max_length=10, choices=DatasetSplit.choices)
    inputs = models.JSONField()
    outputs = models.JSONField()
    accepted = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["dataset_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "position"], name="registry_dataset_example_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(split__in=DatasetSplit.values),
                name="registry_dataset_example_split_known",
            ),
        ]
        indexes = [
            models.Index(fields=["dataset", "split", "position"], name="registry_example_split_idx")
        ]

    def __str__(self) -> str:
        return f"{self.dataset} #{self.position} ({self.split})"


class VersionScore(models.Model):
    """A measured score of one version on one dataset split with one metric and provider.

    Evaluation runs record one when they succeed; the template library records the scores
    measured when its shipped versions were built. Promotion compares these.
    """

    class Source(models.TextChoices):
        EVALUATION = "evaluation", "Evaluation run"
        LIBRARY = "library", "Measured when the template library was built"

    signature_version = models.ForeignKey(
        SignatureVersion, on_delete=models.PROTECT, related_name="scores"
    )
    dataset = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="scores"
    )
    dataset_hash = models.CharField(max_length=64)
    split = models.CharField(max_length=10, choices=DatasetSplit.choices)
    metric = models.CharField(max_length=200)
    provider_name = models.CharField(max_length=100, blank=True)
    model = models.CharField(
        max_length=200, blank=True, help_text="The model the provider ran, when known."
    )
    score = models.FloatField(help_text="Mean metric value, 0 to 1.")
    examples = models.PositiveIntegerField()
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    source = models.CharField(max_length=20, choices=Source.choices)
    reference = models.CharField(
        max_length=200, blank=True, help_text="What produced it, e.g. `evaluation run 12`."
    )
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-recorded_at", "-id"]
        indexes = [
            models.Index(
                fields=["signature_version", "dataset_hash", "split", "metric", "-recorded_at"],
                name="registry_score_lookup_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.signature_version} {self.metric}={self.score:.3f} on {self.split}"


class Promotion(models.Model):
    """The record of an alias moved on the strength of scores (or forced by an editor)."""

    signature = models.ForeignKey(Signature, on_delete=models.CASCADE, related_name="promotions")
    alias_name = models.CharField(max_length=ALIAS_MAX_LENGTH)
    from_version = models.ForeignKey(
        SignatureVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_version = models.ForeignKey(SignatureVersion, on_delete=models.PROTECT, related_name="+")
    from_score = models.FloatField(null=True, blank=True)
    to_score = models.FloatField(null=True, blank=True)
    dataset_hash = models.CharField(max_length=64, blank=True)
    split = models.CharField(max_length=10, blank=True)
    metric = models.CharField(max_length=200, blank=True)
    forced = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    promoted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-promoted_at", "-id"]

    def __str__(self) -> str:
        return f"{self.signature.name}@{self.alias_name} -> v{self.to_version.number}"
