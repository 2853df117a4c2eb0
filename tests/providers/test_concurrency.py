"""Concurrent edits of the fallback graph on PostgreSQL, each thread on its own connection."""

import threading
import time

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction

from providers import services
from providers.models import ProviderFallback
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _waiting_for_advisory_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return cursor.fetchone()[0] > 0


def test_edits_of_unrelated_providers_cannot_close_a_cycle_together():
    """a -> b and c -> d, with b -> c and d -> a stored: whichever commits second is refused."""
    assert connection.vendor == "postgresql"
    a, b, c, d = (ProviderFactory(name=name) for name in "abcd")
    services.provider_set_fallbacks(provider=b, fallbacks=[c])
    services.provider_set_fallbacks(provider=d, fallbacks=[a])
    first_done, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                services.provider_set_fallbacks(provider=a, fallbacks=[b])
                first_done.set()
                release.wait(timeout=30)
            results["first"] = "saved"
        except Exception as exc:  # reported to the test, not lost in the thread
            results["first"] = exc
        finally:
            first_done.set()
            connections.close_all()

    def second() -> None:
        try:
            services.provider_set_fallbacks(provider=c, fallbacks=[d])
            results["second"] = "saved"
        except Exception as exc:
            results["second"] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_done.wait(timeout=30)
    threads[1].start()
    # The second edit must wait for the first to commit (it holds the graph lock), or finish.
    deadline = time.monotonic() + 30
    while threads[1].is_alive() and not _waiting_for_advisory_lock():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    assert results["first"] == "saved"
    assert isinstance(results["second"], ValidationError)
    assert "makes a cycle" in str(results["second"])
    assert not ProviderFallback.objects.filter(provider=c).exists()
