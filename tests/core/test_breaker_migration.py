"""The move of the circuit breakers from executions to providers keeps every row.

Runs the migrations back to the old layout, writes breakers and events there through the
historical models, migrates forward to the latest migrations, and reads them through today's
models.
"""

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from providers.models import BreakerEvent, CircuitBreaker

OLD = [("executions", "0004_execution_success_from_status"), ("providers", "0003_readable_labels")]


def _latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_breakers_and_events_survive_the_move():
    try:
        old = _migrate(OLD)
        Provider = old.get_model("providers", "Provider")
        OldBreaker = old.get_model("executions", "CircuitBreaker")
        OldEvent = old.get_model("executions", "BreakerEvent")
        provider = Provider.objects.create(name="remote", kind="openai", model="m")
        breaker = OldBreaker.objects.create(
            provider=provider, state="open", window=["f", "f"], failure_rate_threshold=40.0
        )
        OldEvent.objects.create(
            breaker=breaker,
            from_state="closed",
            to_state="open",
            reason="tripped",
            at=timezone.now(),
        )
        # A database of the old layout has the executions app's content type, not the new one.
        ContentType.objects.filter(app_label="providers", model="circuitbreaker").delete()
        ContentType.objects.get_or_create(app_label="executions", model="circuitbreaker")
    finally:
        # Back to the latest state, not just past the move: later tests need today's schema.
        _migrate(_latest())

    moved = CircuitBreaker.objects.get(provider__name="remote")
    assert (moved.state, moved.window, moved.failure_rate_threshold) == ("open", ["f", "f"], 40.0)
    assert [event.reason for event in BreakerEvent.objects.filter(breaker=moved)] == ["tripped"]
    assert CircuitBreaker._meta.db_table == "providers_circuitbreaker"
    assert ContentType.objects.filter(app_label="providers", model="circuitbreaker").exists()
    assert not ContentType.objects.filter(app_label="executions", model="circuitbreaker").exists()
    # New rows get fresh ids after the moved ones (the sequence came along with the table).
    assert (
        BreakerEvent.objects.create(
            breaker=moved, from_state="open", to_state="closed", reason="reset", at=timezone.now()
        ).pk
        > BreakerEvent.objects.get(reason="tripped").pk
    )
