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
