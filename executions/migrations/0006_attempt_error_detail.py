"""Attempts keep the provider's own (scrubbed) error text apart from the toolkit's message.

Rows written before this stored upstream text, which may echo a provider's key, in
`error_message`: it moves to `error_detail`, scrubbed, and the attempt's message becomes one
the toolkit writes; executions' messages are scrubbed in place.
"""

from django.db import migrations, models

from core.secrets import known_secrets, scrub

BATCH = 500


def _scrub_stored_errors(apps, schema_editor):
    secrets = known_secrets()
    ExecutionAttempt = apps.get_model("executions", "ExecutionAttempt")
    attempts = ExecutionAttempt.objects.filter(outcome="failed").exclude(error_message="")
    batch = []
    for attempt in attempts.only("id", "error_code", "error_message").iterator(BATCH):
        attempt.error_detail = scrub(attempt.error_message, secrets=secrets)
        attempt.error_message = (
            f"The provider call failed ({attempt.error_code or 'provider_error'})."
        )
        batch.append(attempt)
        if len(batch) == BATCH:
            ExecutionAttempt.objects.bulk_update(batch, ["error_message", "error_detail"])
            batch = []
    ExecutionAttempt.objects.bulk_update(batch, ["error_message", "error_detail"])

    Execution = apps.get_model("executions", "Execution")
    batch = []
    for execution in (
        Execution.objects.exclude(error_message="").only("id", "error_message").iterator(BATCH)
    ):
        clean = scrub(execution.error_message, secrets=secrets)
        if clean != execution.error_message:
            execution.error_message = clean
            batch.append(execution)
        if len(batch) == BATCH:
            Execution.objects.bulk_update(batch, ["error_message"])
            batch = []
    Execution.objects.bulk_update(batch, ["error_message"])


class Migration(migrations.Migration):
    dependencies = [
        ("executions", "0005_breakers_move"),
    ]

    operations = [
        migrations.AddField(
            model_name="executionattempt",
            name="error_detail",
            field=models.TextField(
                blank=True,
                help_text=(
                    "What the provider's error said, scrubbed of secrets: for staff only, never "
                    "returned by the API."
                ),
            ),
        ),
        migrations.AlterField(
            model_name="executionattempt",
            name="error_message",
            field=models.TextField(
                blank=True, help_text="Written by the toolkit: what API clients see of a failure."
            ),
        ),
        migrations.RunPython(_scrub_stored_errors, migrations.RunPython.noop, elidable=True),
    ]
