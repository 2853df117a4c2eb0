"""The failure log: each attempt keeps its cause, breaker state, prompt, raw output, traceback
and tokens; each execution names its root cause and the execution it re-runs.

Rows written before keep empty evidence, but get their cause from their error code, so that
filtering by cause covers them too: an exhausted chain takes the cause of the first call of
its last run that was made (the rule of `executions.services.runs.execution_root_cause`).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

# Error codes as the toolkit wrote them (DSPy's `default_code`s and its own) -> cause.
CAUSE_BY_CODE = {
    "transport": "transport",
    "timeout": "timeout",
    "adapter_parse_error": "parse",
    "circuit_open": "breaker_open",
    "rate_limit": "rate_limited",
    "auth": "auth",
    "malformed_response": "invalid_output",
    "server": "provider_error",
    "context_window_exceeded": "context_window",
    "worker_lost": "worker_lost",
    "cancelled": "cancelled",
    "internal_error": "internal",
    "providers_timed_out": "timeout",
}


def _backfill_causes(apps, schema_editor):
    Execution = apps.get_model("executions", "Execution")
    ExecutionAttempt = apps.get_model("executions", "ExecutionAttempt")
    failed = ["failed", "rejected"]
    for code, cause in CAUSE_BY_CODE.items():
        ExecutionAttempt.objects.filter(outcome__in=failed, error_code=code).update(cause=cause)
        Execution.objects.filter(error_code=code).update(error_cause=cause)
    ExecutionAttempt.objects.filter(outcome__in=failed, cause="").update(cause="provider_error")
    exhausted = Execution.objects.filter(error_code="providers_exhausted")
    first_made = (
        ExecutionAttempt.objects.filter(execution=OuterRef("pk"), run=OuterRef("attempts"))
        .exclude(cause__in=["", "breaker_open"])
        .order_by("position")
        .values("cause")[:1]
    )
    # Every provider refused by its breaker: no call was made.
    exhausted.update(error_cause=Coalesce(Subquery(first_made), Value("breaker_open")))
    # Any other failure the toolkit recorded without a known code.
    Execution.objects.filter(
        status__in=["failed", "timed_out", "cancelled"], error_cause=""
    ).update(error_cause="internal")


class Migration(migrations.Migration):
    dependencies = [
        ("executions", "0006_attempt_error_detail"),
        ("providers", "0004_breakers_move"),
        ("registry", "0001_initial"),
        ("rest_framework_api_key", "0005_auto_20220110_1102"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ExecutionFailure",
            fields=[],
            options={
                "verbose_name": "failure",
                "verbose_name_plural": "failure log",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("executions.executionattempt",),
        ),
        migrations.AddField(
            model_name="execution",
            name="error_cause",
            field=models.CharField(
                blank=True,
                choices=[
                    ("transport", "Transport (unreachable)"),
                    ("timeout", "Timeout"),
                    ("parse", "Parse failure"),
                    ("breaker_open", "Breaker open"),
                    ("rate_limited", "Rate limited"),
                    ("auth", "Authentication"),
                    ("invalid_output", "Invalid provider output"),
                    ("provider_error", "Provider error"),
                    ("invalid_request", "Request refused"),
                    ("context_window", "Context window exceeded"),
                    ("worker_lost", "Worker lost"),
                    ("cancelled", "Cancelled"),
                    ("internal", "Internal error"),
                ],
                help_text="The root cause of a failure (empty unless it failed, timed out or was cancelled).",
                max_length=32,
                verbose_name="cause",
            ),
        ),
        migrations.AddField(
            model_name="execution",
            name="rerun_of",
            field=models.ForeignKey(
                blank=True,
                help_text="The execution this one runs again (a re-run never changes the original).",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="reruns",
                to="executions.execution",
            ),
        ),
        migrations.AddField(
            model_name="execution",
            name="keep_trace",
            field=models.BooleanField(
                default=False,
                help_text="Keep the prompt and the raw output of successful calls too (failed calls always keep theirs). Set by the admin's Try it, off for API executions.",
            ),
        ),
        migrations.AddField(
            model_name="executionattempt",
            name="breaker_state",
            field=models.CharField(
                blank=True,
                choices=[("closed", "Closed"), ("open", "Open"), ("half_open", "Half-open")],
                help_text="The provider's breaker state when the call was admitted (or refused).",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="executionattempt",
            name="cause",
            field=models.CharField(
                blank=True,
                choices=[
                    ("transport", "Transport (unreachable)"),
                    ("timeout", "Timeout"),
                    ("parse", "Parse failure"),
                    ("breaker_open", "Breaker open"),
                    ("rate_limited", "Rate limited"),
                    ("auth", "Authentication"),
                    ("invalid_output", "Invalid provider output"),
                    ("provider_error", "Provider error"),
                    ("invalid_request", "Request refused"),
                    ("context_window", "Context window exceeded"),
                    ("worker_lost", "Worker lost"),
                    ("cancelled", "Cancelled"),
                    ("internal", "Internal error"),
                ],
                max_length=32,
            ),
        ),
        migrations.AddField(
            model_name="executionattempt",
            name="input_tokens",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="executionattempt",
            name="output_tokens",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="executionattempt",
            name="prompt",
            field=models.TextField(
                blank=True,
                help_text="The messages sent, as text (empty when EXECUTIONS_FAILURE_LOG_INPUTS is off: the prompt carries the inputs).",
            ),
        ),
        migrations.AddField(
            model_name="executionattempt",
            name="raw_output",
            field=models.TextField(blank=True, help_text="What the model wrote, unparsed."),
        ),
        migrations.AddField(
            model_name="executionattempt",
            name="traceback",
            field=models.TextField(blank=True),
        ),
        migrations.AlterField(
            model_name="execution",
            name="input_tokens",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Succeeded: the answer's tokens; failed: those of every call of its last run.",
                null=True,
            ),
        ),
        migrations.AddIndex(
            model_name="execution",
            index=models.Index(
                condition=models.Q(("error_cause", ""), _negated=True),
                fields=["error_cause", "queued_at"],
                name="execution_cause_queued",
            ),
        ),
        migrations.AddIndex(
            model_name="executionattempt",
            index=models.Index(
                condition=models.Q(("outcome__in", ("failed", "rejected"))),
                fields=["-started_at"],
                name="execution_attempt_failures",
            ),
        ),
        migrations.AddConstraint(
            model_name="execution",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "error_cause__in",
                        [
                            "transport",
                            "timeout",
                            "parse",
                            "breaker_open",
                            "rate_limited",
                            "auth",
                            "invalid_output",
                            "provider_error",
                            "invalid_request",
                            "context_window",
                            "worker_lost",
                            "cancelled",
                            "internal",
                            "",
                        ],
                    )
                ),
                name="execution_error_cause_known",
            ),
        ),
        migrations.AddConstraint(
            model_name="executionattempt",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "cause__in",
                        [
                            "transport",
                            "timeout",
                            "parse",
                            "breaker_open",
                            "rate_limited",
                            "auth",
                            "invalid_output",
                            "provider_error",
                            "invalid_request",
                            "context_window",
                            "worker_lost",
                            "cancelled",
                            "internal",
                            "",
                        ],
                    )
                ),
                name="execution_attempt_cause_known",
            ),
        ),
        migrations.RunPython(_backfill_causes, migrations.RunPython.noop),
    ]
