"""Several processes race for half-open trial permits: the row lock admits exactly N."""

import subprocess
from datetime import timedelta

import pytest

from providers import breakers
from providers.models import CircuitBreaker
from tests.support.factories import ProviderFactory

PROCESSES = 8
PERMITTED = 3


@pytest.mark.django_db(transaction=True)
def test_exactly_the_permitted_trial_calls_are_admitted(
    clock, python, repo_root, subprocess_env, tmp_path
):
    provider = ProviderFactory(name="racy")
    breaker = breakers.breaker_get_or_create(provider=provider)
    CircuitBreaker.objects.filter(pk=breaker.pk).update(
        minimum_calls=1, open_duration_s=30, half_open_permitted_calls=PERMITTED
    )
    breakers.breaker_acquire_permission(provider=provider, now=clock)
    breakers.breaker_record_failure(provider=provider, duration_s=0.1, now=clock)
    assert CircuitBreaker.objects.get(pk=breaker.pk).state == CircuitBreaker.State.OPEN

    go_file = tmp_path / "go"
    moment = (clock() + timedelta(seconds=31)).isoformat()
    children = [
        subprocess.Popen(
            [python, "-m", "tests.providers.breaker_race", provider.name, moment, str(go_file)],
            cwd=repo_root,
            env=subprocess_env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        go_file.touch()
        answers = [child.communicate(timeout=60)[0].strip() for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    assert sorted(answers) == ["admitted"] * PERMITTED + ["refused"] * (PROCESSES - PERMITTED)
    breaker.refresh_from_db()
    assert breaker.state == CircuitBreaker.State.HALF_OPEN
    assert breaker.half_open_permits_issued == PERMITTED
    assert breaker.events.filter(to_state=CircuitBreaker.State.HALF_OPEN).count() == 1
