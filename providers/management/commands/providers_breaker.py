from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from providers.breakers import (
    BreakerStatus,
    breaker_force_open,
    breaker_get_or_create,
    breaker_reset,
    breaker_status,
)
from providers.exceptions import ProviderNotFound
from providers.models import CircuitBreaker
from providers.selectors import provider_breaker_statuses, provider_get, provider_list

RECENT_EVENTS = 10
AT = "%Y-%m-%d %H:%M:%S %Z"


class Command(BaseCommand):
    help = (
        "Without a provider: list every provider's circuit breaker with the state a call would "
        "find now. With one: show its breaker in detail, force it open, or reset it (close it)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "provider", nargs="?", type=str, help="The provider's name (leave out to list all)."
        )
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
            "--reason",
            type=str,
            default="",
            help="Why, recorded in the breaker's event log (with --force-open or --reset).",
        )

    def handle(
        self,
        *args,
        provider: str | None,
        force_open: bool,
        reset: bool,
        show: bool,
        reason: str,
        **options,
    ) -> None:
        if reason and not (force_open or reset):
            raise CommandError("--reason goes with --force-open or --reset.")
        if provider is None:
            if force_open or reset or show:
                raise CommandError(
                    "Name the provider whose breaker to show, force open or reset "
                    "(`providers_breaker` alone lists them all)."
                )
            self._list()
            return
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

    def _list(self) -> None:
        providers = list(provider_list())
        if not providers:
            self.stdout.write("No provider is configured.")
            return
        statuses = provider_breaker_statuses(providers=providers, now=timezone.now())
        for provider in providers:
            status = statuses[provider.pk]
            self.stdout.write(f"{provider.name}: {status.summary}")
            if status.last_transition:
                self.stdout.write(f"  last transition: {_describe_transition(status)}")

    def _show(self, breaker: CircuitBreaker) -> None:
        status = breaker_status(breaker=breaker, now=timezone.now())
        self.stdout.write(f"{breaker.provider.name}: {status.summary}")
        self.stdout.write(f"  stored state: {breaker.state} since {breaker.state_changed_at:{AT}}")
        self.stdout.write(
            f"  recent calls: {status.failures_in_window} failed of {status.calls_in_window} "
            f"(window {breaker.sliding_window_size}, minimum {breaker.minimum_calls}, "
            f"failure threshold {breaker.failure_rate_threshold:g}%, slow-call threshold "
            f"{breaker.slow_call_rate_threshold:g}% of calls of {breaker.slow_call_duration_s:g}s "
            f"or more)"
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


def _describe_transition(status: BreakerStatus) -> str:
    transition = status.last_transition
    return (
        f"{transition.at:{AT}} {transition.from_state} -> {transition.to_state}: "
        f"{transition.reason}"
    )
