"""Circuit breakers move from the executions app to providers, keeping their rows.

The tables exist already (created by executions 0001): this migration takes the two models
into the providers app's state without touching the database, then renames their tables, and
moves their content types so that permissions granted on them are kept.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

MODELS = ("circuitbreaker", "breakerevent")


def move_content_types(apps, schema_editor, *, source="executions", target="providers"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        if not ContentType.objects.filter(app_label=target, model=model).exists():
            ContentType.objects.filter(app_label=source, model=model).update(app_label=target)


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, source="providers", target="executions")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("executions", "0004_execution_success_from_status"),
        ("providers", "0003_readable_labels"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="CircuitBreaker",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "state",
                            models.CharField(
                                choices=[
                                    ("closed", "Closed"),
                                    ("open", "Open"),
                                    ("half_open", "Half-open"),
                                ],
                                default="closed",
                                max_length=16,
                            ),
                        ),
                        (
                            "forced",
                            models.BooleanField(
                                default=False,
                                help_text="Forced open by an operator: stays open until reset, never half-opens.",
                            ),
                        ),
                        (
                            "state_changed_at",
                            models.DateTimeField(default=django.utils.timezone.now),
                        ),
                        (
                            "failure_rate_threshold",
                            models.FloatField(
                                default=50.0,
                                help_text="Percent of failed calls in the window that opens the breaker.",
                            ),
                        ),
                        (
                            "slow_call_rate_threshold",
                            models.FloatField(
                                default=100.0,
                                help_text="Percent of slow calls in the window that opens the breaker.",
                            ),
                        ),
                        (
                            "slow_call_duration_s",
                            models.FloatField(
                                default=60.0,
                                help_text="A call that takes at least this long counts as slow.",
                                verbose_name="slow call duration (s)",
                            ),
                        ),
                        (
                            "sliding_window_size",
                            models.PositiveIntegerField(
                                default=20,
                                help_text="How many of the most recent calls the rates are computed over.",
                            ),
                        ),
                        (
                            "minimum_calls",
                            models.PositiveIntegerField(
                                default=10,
                                help_text="Calls recorded before the rates can open the breaker.",
                            ),
                        ),
                        (
                            "open_duration_s",
                            models.FloatField(
                                default=30.0,
                                help_text="How long the breaker stays open before admitting trial calls.",
                                verbose_name="open duration (s)",
                            ),
                        ),
                        (
                            "half_open_permitted_calls",
                            models.PositiveIntegerField(
                                default=3, help_text="Trial calls admitted while half-open."
                            ),
                        ),
                        (
                            "half_open_max_wait_s",
                            models.FloatField(
                                default=300.0,
                                help_text="If the trial calls have not all reported back after this long (a worker died holding a permit), the breaker opens again and later admits fresh trials.",
                                verbose_name="half-open max wait (s)",
                            ),
                        ),
                        ("window", models.JSONField(blank=True, default=list)),
                        ("half_open_permits_issued", models.PositiveIntegerField(default=0)),
                        ("half_open_outcomes", models.JSONField(blank=True, default=list)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "provider",
                            models.OneToOneField(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="circuit_breaker",
                                to="providers.provider",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "executions_circuitbreaker",
                        "ordering": ["provider__name"],
                    },
                ),
                migrations.CreateModel(
                    name="BreakerEvent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "from_state",
                            models.CharField(
                                choices=[
                                    ("closed", "Closed"),
                                    ("open", "Open"),
                                    ("half_open", "Half-open"),
                                ],
                                max_length=16,
                            ),
                        ),
                        (
                            "to_state",
                            models.CharField(
                                choices=[
                                    ("closed", "Closed"),
                                    ("open", "Open"),
                                    ("half_open", "Half-open"),
                                ],
                                max_length=16,
                            ),
                        ),
                        ("reason", models.CharField(max_length=500)),
                        ("at", models.DateTimeField(db_index=True)),
                        (
                            "breaker",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="events",
                                to="providers.circuitbreaker",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "executions_breakerevent",
                        "ordering": ["-at", "-id"],
                    },
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("state__in", ["closed", "open", "half_open"])),
                        name="breaker_state_known",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("state", "open"), ("forced", False), _connector="OR"),
                        name="breaker_forced_only_open",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            ("failure_rate_threshold__gt", 0), ("failure_rate_threshold__lte", 100)
                        ),
                        name="breaker_failure_rate_range",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            ("slow_call_rate_threshold__gt", 0),
                            ("slow_call_rate_threshold__lte", 100),
                        ),
                        name="breaker_slow_rate_range",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("slow_call_duration_s__gt", 0)),
                        name="breaker_slow_duration_positive",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("sliding_window_size__gte", 1)),
                        name="breaker_window_size_positive",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("minimum_calls__gte", 1)),
                        name="breaker_minimum_calls_positive",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("open_duration_s__gte", 0)),
                        name="breaker_open_duration_non_negative",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("half_open_permitted_calls__gte", 1)),
                        name="breaker_half_open_calls_positive",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("half_open_max_wait_s__gt", 0)),
                        name="breaker_half_open_wait_positive",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="circuitbreaker",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            ("half_open_permits_issued__lte", models.F("half_open_permitted_calls"))
                        ),
                        name="breaker_half_open_permits_bounded",
                    ),
                ),
                migrations.AddIndex(
                    model_name="breakerevent",
                    index=models.Index(fields=["breaker", "-at"], name="breaker_event_recent"),
                ),
            ],
        ),
        migrations.AlterModelTable(name="circuitbreaker", table=None),
        migrations.AlterModelTable(name="breakerevent", table=None),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
