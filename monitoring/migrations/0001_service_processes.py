"""The service's processes, each as it last reported itself (`monitoring.processes`)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="ServiceProcess",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("host", models.CharField(max_length=255)),
                ("pid", models.PositiveIntegerField()),
                ("started_at", models.DateTimeField()),
                (
                    "role",
                    models.CharField(
                        choices=[
                            ("web", "Web worker"),
                            ("cluster", "django-q2 cluster"),
                            ("worker", "django-q2 worker"),
                        ],
                        max_length=16,
                    ),
                ),
                ("cluster", models.CharField(blank=True, max_length=64)),
                ("heartbeat_at", models.DateTimeField(db_index=True)),
                (
                    "rss_bytes",
                    models.PositiveBigIntegerField(
                        blank=True, null=True, verbose_name="resident memory (bytes)"
                    ),
                ),
                ("loaded_models", models.JSONField(blank=True, default=list)),
            ],
            options={
                "verbose_name": "service process",
                "verbose_name_plural": "resources (service processes)",
                "ordering": ["role", "cluster", "host", "pid"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("host", "pid", "started_at"), name="service_process_unique"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("role__in", ["web", "cluster", "worker"])),
                        name="service_process_role_known",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("cluster", ""), ("role", "web")),
                            models.Q(
                                models.Q(("role", "web"), _negated=True),
                                models.Q(("cluster", ""), _negated=True),
                            ),
                            _connector="OR",
                        ),
                        name="service_process_cluster_matches_role",
                    ),
                ],
            },
        ),
    ]
