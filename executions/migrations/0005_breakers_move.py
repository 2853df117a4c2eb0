"""Circuit breakers moved to the providers app (providers 0004), which took over their tables:
the executions app only forgets the two models."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("executions", "0004_execution_success_from_status"),
        ("providers", "0004_breakers_move"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(model_name="circuitbreaker", name="provider"),
                migrations.DeleteModel(name="BreakerEvent"),
                migrations.DeleteModel(name="CircuitBreaker"),
            ],
        ),
    ]
