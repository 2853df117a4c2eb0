from django.core.management.base import BaseCommand, CommandError

from providers.breakers import (
    breaker_force_open,
    breaker_get_or_create,
    breaker_reset,
    breaker_window_failures,
)
from providers.exceptions import ProviderNotFound
from providers.models import CircuitBreaker
from providers.selectors import provider_get

RECENT_EVENTS = 10


class Command(BaseCommand):
    help = "Show a provider's circuit breaker, force it open, or reset it (close it)."

    def add_arguments(self, parser):
        parser.add_argument("provider", type=str, help="The provider's name.")
        action = parser.add_mutually_exclusive_group()
        action.add_argument(
            "--force-open",
            action="store_true",
            help="Open the breaker and keep it open (no trial calls) until --reset.",
        )
        action.add_argument(
            "--reset", action="store_true", help="Close the breaker and clear its recent calls."
        )
        action.add_argument(
            "--show", action="store_true", help="Show the state (the default action)."
        )
        parser.add_argument(
            "--reason", type=str, default="", help="Why, recorded in the breaker's event log."
        )

    def handle(self, *args, provider: str, force_open: bool, reset: bool, reason: str, **options):
        try:
            chosen = provider_get(name=provider)
        except ProviderNotFound as exc:
            raise CommandError(str(exc)) from None
        if force_open:
            breaker = breaker_force_open(
                provider=chosen, reason=reason or "forced open from the command line"
            )
        elif reset:
            breaker = breaker_reset(provider=chosen, reason=reason or "reset from the command line")
        else:
            breaker = breaker_get_or_create(provider=chosen)
        self._show(breaker)

    def _show(self, breaker: CircuitBreaker) -> None:
        forced = " (forced)" if breaker.forced else ""
        failures = breaker_window_failures(breaker=breaker)
        self.stdout.write(
            f"{breaker.provider.name}: {breaker.state}{forced} "
            f"since {breaker.state_changed_at:%Y-%m-%d %H:%M:%S %Z}"
        )
        self.stdout.write(
            f"  recent calls: {failures} failed of {len(breaker.window)} "
            f"(window {breaker.sliding_window_size}, minimum {breaker.minimum_calls}, "
            f"failure threshold {breaker.failure_rate_threshold:g}%)"
        )
        if breaker.state == CircuitBreaker.State.HALF_OPEN:
            self.stdout.write(
                f"  trial calls: {breaker.half_open_permits_issued} of "
                f"{breaker.half_open_permitted_calls} admitted, "
                f"{len(breaker.half_open_outcomes)} reported"
            )
        events = breaker.events.order_by("-at", "-id")[:RECENT_EVENTS]
        for event in events:
            self.stdout.write(
                f"  {event.at:%Y-%m-%d %H:%M:%S} {event.from_state} -> {event.to_state}: "
                f"{event.reason}"
            )
