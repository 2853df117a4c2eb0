import dspy
from django.core.management.base import BaseCommand, CommandError
from dspy.utils.exceptions import AdapterParseError

from providers.calls import provider_error_detail, provider_execute
from providers.exceptions import ProviderNotFound
from providers.selectors import provider_get


class Command(BaseCommand):
    help = "Run one short question through a provider and print the answer, tokens and time."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The provider's name.")
        parser.add_argument(
            "--question",
            default="What is the capital of France?",
            help="The question to ask (default: %(default)s).",
        )

    def handle(self, *args, name: str, question: str, **options) -> None:
        try:
            provider = provider_get(name=name)
        except ProviderNotFound as exc:
            raise CommandError(str(exc)) from exc
        try:
            result = provider_execute(
                provider=provider,
                program=dspy.Predict("question -> answer"),
                inputs={"question": question},
            )
        except (dspy.LMError, AdapterParseError) as exc:
            # The operator sees what the provider said, without its key (an endpoint may echo
            # the request's Authorization header).
            detail = provider_error_detail(provider=provider, error=exc)
            raise CommandError(f"Provider {name!r} failed: {detail}") from None
        self.stdout.write(f"answer: {result.outputs['answer']}")
        self.stdout.write(
            f"tokens: {result.input_tokens} in, {result.output_tokens} out; "
            f"{result.duration_s:.2f} s; optimisations: "
            f"{', '.join(result.applied_optimizations) or 'none'}"
        )
