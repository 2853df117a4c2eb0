"""What the breakers promise across processes, proven with real processes on PostgreSQL.

- Outcomes recorded by several processes at once are all kept (no lost update).
- A trial-permit holder that is killed stops counting once its lease is over.
- A breaker opened by one process is refused by the next call in any other.
"""

import os
import signal
import subprocess
from datetime import timedelta

import pytest

from providers import breakers
from providers.models import CircuitBreaker
from tests.support.factories import ProviderFactory
from tests.support.processes import stop


@pytest.fixture
def spawn(python, repo_root, subprocess_env, tmp_path):
    """Start breaker worker processes that wait for the returned go file."""
    go_file = tmp_path / "go"
    children: list[subprocess.Popen] = []

    def start(provider_name: str, *action: str, go=go_file) -> subprocess.Popen:
        child = subprocess.Popen(
            [python, "-m", "tests.providers.breaker_worker", provider_name, str(go), *action],
            cwd=repo_root,
            env=subprocess_env,
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        assert child.stdout.readline().strip() == "ready"
        return child

    yield start, go_file
    for child in children:
        stop(child, timeout=10)


def _configure(provider, **fields) -> CircuitBreaker:
    breaker = breakers.breaker_get_or_create(provider=provider)
    CircuitBreaker.objects.filter(pk=breaker.pk).update(**fields)
    return CircuitBreaker.objects.get(pk=breaker.pk)


@pytest.mark.django_db(transaction=True)
def test_four_processes_recording_500_failures_each_store_2000(spawn):
    start, go_file = spawn
    provider = ProviderFactory(name="counted")
    # A window that holds every outcome and a minimum the test never reaches: it stays closed.
    _configure(provider, sliding_window_size=5000, minimum_calls=5000)
    children = [start(provider.name, "fail", "500") for _ in range(4)]
    go_file.touch()
    for child in children:
        assert child.communicate(timeout=120)[0].strip() == "done"
    breaker = CircuitBreaker.objects.get(provider=provider)
    assert breaker.state == CircuitBreaker.State.CLOSED
    assert len(breaker.window) == 2000
    assert breakers.breaker_window_failures(breaker=breaker) == 2000


@pytest.mark.django_db(transaction=True)
def test_a_killed_permit_holder_stops_counting_once_its_lease_is_over(spawn, clock):
    start, go_file = spawn
    provider = ProviderFactory(name="leased")
    lease_s = 5.0
    _configure(
        provider,
        state=CircuitBreaker.State.HALF_OPEN,
        half_open_permitted_calls=1,
        half_open_max_wait_s=lease_s,
        open_duration_s=0.0,
    )
    holder = start(provider.name, "hold")
    go_file.touch()
    assert holder.stdout.readline().strip() == "holding"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()

    leased_at = CircuitBreaker.objects.get(provider=provider).state_changed_at
    within_lease = leased_at + timedelta(seconds=lease_s - 0.5)
    assert not breakers.breaker_acquire_permission(provider=provider, now=lambda: within_lease)
    # Within the lease plus one second, the dead holder's permit no longer blocks trials: the
    # breaker reopens and, its open period over, admits a fresh trial.
    after = leased_at + timedelta(seconds=lease_s + 1)
    breakers.breaker_acquire_permission(provider=provider, now=lambda: after)
    assert breakers.breaker_acquire_permission(provider=provider, now=lambda: after)
    breaker = CircuitBreaker.objects.get(provider=provider)
    assert breaker.state == CircuitBreaker.State.HALF_OPEN
    assert breaker.events.filter(reason__contains="did not all report back").exists()


@pytest.mark.django_db(transaction=True)
def test_an_open_breaker_is_refused_by_the_next_call_of_another_process(spawn, tmp_path):
    start, go_file = spawn
    provider = ProviderFactory(name="shared")
    before = start(provider.name, "ask")
    # Connected before the breaker opens, asking after: no process caches the state.
    after = start(provider.name, "ask", go=tmp_path / "go-after")
    go_file.touch()
    assert before.communicate(timeout=30)[0].strip() == "admitted"
    breakers.breaker_force_open(provider=provider)
    (tmp_path / "go-after").touch()
    assert after.communicate(timeout=30)[0].strip() == "refused"
