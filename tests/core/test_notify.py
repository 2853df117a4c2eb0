"""Wake-ups across processes (`core.notify`), on each backend: a subscription in this process
is woken by a notification another process sends."""

import os
import subprocess
import sys

import pytest
import redis
from django.db import transaction

from core import notify

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Sends each (channel, payload) pair of its arguments.
SEND = (
    "import django, sys; django.setup(); from core import notify; "
    "[notify.notify(c, p) for c, p in zip(sys.argv[1::2], sys.argv[2::2])]"
)


def _redis_reachable() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        return False
    return True


@pytest.fixture(params=[notify.POSTGRES, notify.REDIS, notify.LOCAL])
def backend(request, settings, subprocess_env):
    if request.param == notify.REDIS:
        if not _redis_reachable():
            pytest.skip("no Redis server reachable (set TEST_REDIS_URL)")
        settings.REDIS_URL = REDIS_URL
    settings.NOTIFY_BACKEND = request.param
    yield request.param, subprocess_env | {"NOTIFY_BACKEND": request.param, "REDIS_URL": REDIS_URL}
    notify.listeners_stop()


def _send_from_another_process(env: dict, *pairs: tuple[str, str]) -> None:
    arguments = [item for pair in pairs for item in pair]
    subprocess.run([sys.executable, "-c", SEND, *arguments], env=env, check=True, timeout=120)


@pytest.mark.django_db(transaction=True)
def test_a_notification_from_another_process_wakes_the_subscriptions_it_concerns(backend):
    name, env = backend
    with (
        notify.subscribe("test-channel", keys=["wanted"]) as wanted,
        notify.subscribe("test-channel", keys=["other"]) as other,
        notify.subscribe("test-channel", keys=None) as anything,
        notify.subscribe("quiet-channel", keys=None) as quiet,
    ):
        assert wanted.live and other.live and anything.live and quiet.live
        _send_from_another_process(env, ("another-channel", "other"), ("test-channel", "wanted"))
        assert wanted.wait(60), f"not woken on {name}"
        assert anything.wait(60)
        # Not those of another payload or another channel (their notifications were sent
        # first, so they would have arrived by now).
        assert not other.wait(0.2)
        assert not quiet.wait(0)


@pytest.mark.django_db(transaction=True)
def test_a_notification_in_a_rolled_back_transaction_is_never_delivered(settings):
    settings.NOTIFY_BACKEND = notify.POSTGRES
    with notify.subscribe("test-channel", keys=["x"]) as subscription:
        with pytest.raises(RuntimeError), transaction.atomic():
            notify.notify("test-channel", "x")
            raise RuntimeError("rolled back")
        assert not subscription.wait(0.5)
        with transaction.atomic():
            notify.notify("test-channel", "x")
            # Not before the commit.
            assert not subscription.wait(0.2)
        assert subscription.wait(60)
    notify.listeners_stop()


def test_without_notifications_a_subscription_says_to_poll(settings):
    settings.NOTIFY_BACKEND = notify.OFF
    with notify.subscribe("test-channel", keys=["x"]) as subscription:
        assert not subscription.live
        notify.notify("test-channel", "x")
        assert not subscription.wait(0)


@pytest.mark.django_db(transaction=True)
def test_auto_chooses_the_databases_own_notifications_on_postgresql(settings):
    settings.NOTIFY_BACKEND = "auto"
    assert notify.notify_backend() == notify.POSTGRES
