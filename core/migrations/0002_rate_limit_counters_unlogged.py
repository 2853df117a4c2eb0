"""The rate-limit counters, on PostgreSQL, in an UNLOGGED table: a request's count is written
without the write-ahead log, so its commit does not wait for a disk flush (every API request
writes one). After a crash the table comes back empty, which only hands each client a fresh
window: counters are not worth a flush per request."""

from django.db import migrations


def _unlogged(apps, schema_editor, *, logged: bool) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name("core_ratelimitcounter")
    schema_editor.execute(f"ALTER TABLE {table} SET {'LOGGED' if logged else 'UNLOGGED'}")


class Migration(migrations.Migration):
    dependencies = [("core", "0001_rate_limit_counters")]

    operations = [
        migrations.RunPython(
            lambda apps, editor: _unlogged(apps, editor, logged=False),
            lambda apps, editor: _unlogged(apps, editor, logged=True),
        )
    ]
