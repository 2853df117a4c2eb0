"""A migration a new release brings and nobody has applied yet."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0001_service_processes")]
    operations: list = []
