from django.core.management.base import BaseCommand, CommandError

from providers.exceptions import ProviderNotFound
from providers.probe import DEFAULT_QUESTION, provider_check
from providers.selectors import provider_get


class Command(BaseCommand):
    help = "Run one short question through a provider and print the answer, tokens and time."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The provider's name.")
        parser.add_argument(
            "--question",
            default=DEFAULT_QUESTION,
            help="The question to ask (default: %(default)s).",
        )

    def handle(self, *args, name: str, question: str, **options) -> None:
        try:
            provider = provider_get(name=name)
        except ProviderNotFound as exc:
            raise CommandError(str(exc)) from exc
        check = provider_check(provider=provider, question=question)
        if not check.ok:
            raise CommandError(f"Provider {name!r} failed: {check.error}")
        self.stdout.write(f"answer: {check.answer}")
        self.stdout.write(check.figures)
