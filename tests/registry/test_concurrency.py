"""Concurrent writers on PostgreSQL: row locks keep alias moves and version numbers consistent.

Each thread has its own database connection (a real concurrent client); a barrier releases
them together.
"""

import itertools
import threading
from collections.abc import Callable

import pytest
from django.db import connection, connections

from registry.exceptions import AliasConflict
from registry.models import Alias, AliasChange, Signature
from registry.services.aliases import alias_set
from registry.services.versions import signature_version_create

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8


def _run_together(work: Callable[[int], object]) -> list[object]:
    barrier = threading.Barrier(THREADS)
    results: list[object] = [None] * THREADS

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except Exception as exc:  # reported to the test, not lost in the thread
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def busy_signature(make_signature) -> Signature:
    assert connection.vendor == "postgresql"
    return make_signature("busy", versions=THREADS + 1)


def test_concurrent_alias_moves_lose_no_update(busy_signature):
    """Every move is recorded against the version it really moved from: a single chain."""
    versions = list(busy_signature.versions.order_by("number"))

    def move(index: int):
        return alias_set(signature=busy_signature, name="production", version=versions[index + 1])

    results = _run_together(move)
    assert not [result for result in results if isinstance(result, Exception)]
    changes = list(
        AliasChange.objects.filter(signature=busy_signature, alias_name="production").order_by("id")
    )
    assert len(changes) == THREADS
    assert changes[0].from_version_id is None
    for before, after in itertools.pairwise(changes):
        assert after.from_version_id == before.to_version_id
    alias = Alias.objects.get(signature=busy_signature, name="production")
    assert alias.version_id == changes[-1].to_version_id
    assert len({change.to_version_id for change in changes}) == THREADS


def test_concurrent_compare_and_set_lets_exactly_one_win(busy_signature):
    versions = list(busy_signature.versions.order_by("number"))
    alias_set(signature=busy_signature, name="production", version=versions[0])

    def move(index: int):
        return alias_set(
            signature=busy_signature,
            name="production",
            version=versions[index + 1],
            expected_version=1,
        )

    results = _run_together(move)
    conflicts = [result for result in results if isinstance(result, AliasConflict)]
    winners = [result for result in results if not isinstance(result, Exception)]
    assert len(winners) == 1
    assert len(conflicts) == THREADS - 1
    winner = winners[0]
    alias = Alias.objects.get(signature=busy_signature, name="production")
    assert alias.version_id == winner.alias.version_id
    assert winner.changed and winner.previous == versions[0]
    assert AliasChange.objects.filter(signature=busy_signature).count() == 2


def test_concurrent_version_additions_get_distinct_gapless_numbers(make_signature, qa_spec):
    signature = make_signature("growing", versions=0)

    def add(index: int):
        spec = qa_spec | {"instructions": f"Answer, variant {index}."}
        return signature_version_create(signature=signature, spec=spec).version.number

    results = _run_together(add)
    assert not [result for result in results if isinstance(result, Exception)]
    assert sorted(results) == list(range(1, THREADS + 1))
    assert signature.versions.count() == THREADS


def test_concurrent_identical_additions_create_one_version(make_signature, qa_spec):
    signature = make_signature("same", versions=0)

    def add(index: int):
        return signature_version_create(signature=signature, spec=qa_spec)

    results = _run_together(add)
    assert not [result for result in results if isinstance(result, Exception)]
    assert sum(result.created for result in results) == 1
    assert signature.versions.count() == 1
