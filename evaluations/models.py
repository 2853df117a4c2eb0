"""Evaluation runs (a version scored on a dataset split) and optimization runs (DSPy
optimizers compiling a version into a better one).

Both are long jobs run by django-q2 workers. Like executions, their rows are shared by the
web processes and the workers: state transitions are guarded updates, a worker proves it is
alive through `heartbeat_at`, and a run whose worker was lost is resumed (evaluations keep
every finished example) or failed by the reaper.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from providers.models import Provider
from registry.models import Dataset, DatasetSplit, SignatureVersion


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class Optimizer(models.TextChoices):
    LABELED_FEW_SHOT = "labeled_few_shot", "LabeledFewShot"
    BOOTSTRAP_FEW_SHOT = "bootstrap_few_shot", "BootstrapFewShot"
    BOOTSTRAP_RANDOM_SEARCH = "bootstrap_random_search", "BootstrapFewShotWithRandomSearch"
    MIPRO_V2 = "mipro_v2", "MIPROv2"


class _Run(models.Model):
    """What evaluation and optimization runs share: status, progress clock, worker lease."""

    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    metric = models.CharField(
        max_length=200, help_text="A built-in metric's name or a dotted path to a function."
    )
    metric_params = models.JSONField(default=dict, blank=True)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="+")
    dataset_hash = models.CharField(
        max_length=64, help_text="The dataset's content hash when the run was created."
    )
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Times a worker started the run (a lost worker's run is resumed)."
    )
    task_id = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES


class EvaluationRun(_Run):
    """One signature version scored on one dataset split, with one provider and one metric."""

    signature_version = models.ForeignKey(
        SignatureVersion, on_delete=models.PROTECT, related_name="evaluation_runs"
    )
    split = models.CharField(max_length=10, choices=DatasetSplit.choices)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="+")
    optimization_run = models.ForeignKey(
        "OptimizationRun",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="evaluations",
        help_text="Set when the run scores an optimization's baseline or result.",
    )
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    score = models.FloatField(null=True, blank=True, help_text="Mean metric value, 0 to 1.")
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="evaluation_run_status_known"
            ),
            models.CheckConstraint(
                condition=Q(done__lte=models.F("total")) | Q(total=0),
                name="evaluation_run_done_within_total",
            ),
        ]
        indexes = [
            models.Index(
                fields=["status", "heartbeat_at"],
                name="evaluation_run_active_idx",
                condition=Q(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]),
            ),
            models.Index(
                fields=["signature_version", "-created_at"], name="evaluation_run_ver_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"evaluation {self.pk} of {self.signature_version} on {self.split}"


class EvaluationResult(models.Model):
    """One example of an evaluation run: what was asked, expected, predicted, and its score.

    Inputs and expected outputs are copied from the example, so a result stays readable when
    the dataset is re-imported later (the run keeps the hash it ran on)."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="results")
    position = models.PositiveIntegerField(help_text="The example's position in the dataset.")
    inputs = models.JSONField()
    expected = models.JSONField()
    accepted = models.JSONField(default=dict, blank=True)
    prediction = models.JSONField(null=True, blank=True)
    raw_output = models.TextField(blank=True)
    score = models.FloatField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    latency_ms = models.FloatField(default=0)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="evaluation_result_unique")
        ]

    def __str__(self) -> str:
        return f"{self.run} #{self.position}"


class OptimizationRun(_Run):
    """A DSPy optimizer compiling a version against a train split, judged on a dev split.

    Its result is a new immutable version (`result_version`); nothing else changes until
    someone promotes it."""

    signature_version = models.ForeignKey(
        SignatureVersion, on_delete=models.PROTECT, related_name="optimization_runs"
    )
    train_split = models.CharField(max_length=10, choices=DatasetSplit.choices)
    dev_split = models.CharField(max_length=10, choices=DatasetSplit.choices)
    student_provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="+")
    teacher_provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    optimizer = models.CharField(max_length=40, choices=Optimizer.choices)
    params = models.JSONField(default=dict, blank=True)
    seed = models.IntegerField(default=0)
    stage = models.CharField(
        max_length=40, blank=True, help_text="What the run is doing now, in words."
    )
    trials_done = models.PositiveIntegerField(default=0)
    trials_total = models.PositiveIntegerField(default=0)
    baseline_score = models.FloatField(null=True, blank=True)
    best_score = models.FloatField(null=True, blank=True)
    trajectory = models.JSONField(
        default=list, blank=True, help_text="Each candidate program's dev score, in order."
    )
    result_version = models.ForeignKey(
        SignatureVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="optimization_run_status_known"
            ),
            models.CheckConstraint(
                condition=Q(optimizer__in=Optimizer.values), name="optimization_run_optimizer_known"
            ),
        ]
        indexes = [
            models.Index(
                fields=["status", "heartbeat_at"],
                name="optimization_run_active_idx",
                condition=Q(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]),
            )
        ]

    def __str__(self) -> str:
        return (
            f"optimization {self.pk} of {self.signature_version} ({self.get_optimizer_display()})"
        )
