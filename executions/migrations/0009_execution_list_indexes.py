"""The executions list's indexes (newest first after one equality: `Execution.Meta.indexes`).

Built with CREATE INDEX CONCURRENTLY on PostgreSQL, so that a deployment with a large table
keeps accepting executions while they are built (a plain CREATE INDEX blocks every insert
until it ends); SQLite has no such option and gets a plain one.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexWithoutBlockingInserts(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_forwards(
                self, app_label, schema_editor, from_state, to_state
            )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_backwards(
                self, app_label, schema_editor, from_state, to_state
            )


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("executions", "0008_attempt_pool"),
    ]

    operations = [
        AddIndexWithoutBlockingInserts(
            model_name="execution",
            index=models.Index(
                fields=["api_key", "-queued_at", "-id"],
                condition=models.Q(api_key__isnull=False),
                name="execution_list_api_key",
            ),
        ),
        AddIndexWithoutBlockingInserts(
            model_name="execution",
            index=models.Index(
                fields=["status", "-queued_at", "-id"], name="execution_list_status"
            ),
        ),
        AddIndexWithoutBlockingInserts(
            model_name="execution",
            index=models.Index(
                fields=["signature_version", "-queued_at", "-id"],
                name="execution_list_signature",
            ),
        ),
    ]
