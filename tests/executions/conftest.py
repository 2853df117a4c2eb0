"""Fixtures of the executions tests: providers, a movable clock, API clients."""

from datetime import UTC, datetime, timedelta

import pytest

from providers.models import Provider


class MovableClock:
    """A `now` callable for the breaker and the reaper that tests move by hand."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def make_provider(db):
    def make(name: str = "remote", **fields) -> Provider:
        defaults = {"kind": Provider.Kind.OPENAI, "model": "test-model", "base_url": ""}
        return Provider.objects.create(name=name, **(defaults | fields))

    return make
