from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("providers", "0004_breakers_move"),
    ]

    operations = [
        migrations.AddField(
            model_name="provider",
            name="serving_cluster",
            field=models.CharField(
                blank=True,
                help_text=(
                    "mlx: the inference cluster (one of Q_INFERENCE_CLUSTERS) whose workers load "
                    "the model and run its executions, e.g. the one on a machine with an "
                    "accelerator; blank: the first of them."
                ),
                max_length=100,
            ),
        ),
        migrations.AddConstraint(
            model_name="provider",
            constraint=models.CheckConstraint(
                condition=models.Q(("kind", "mlx"), ("serving_cluster", ""), _connector="OR"),
                name="provider_serving_cluster_only_local",
            ),
        ),
    ]
