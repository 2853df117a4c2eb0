"""The operator's check of a provider: one short question, straight to its engine.

Run by `manage.py providers_check` and the button on the provider's admin page. It bypasses
the circuit breaker on purpose: an operator checks a provider most often while its breaker
is open, and a probe's outcome should not count as traffic.
"""

from dataclasses import dataclass

import dspy
from django_q.tasks import async_task, result
from dspy.utils.exceptions import AdapterParseError

from core.secrets import scrub
from providers.calls import (
    ProviderResult,
    provider_error_detail,
    provider_execute,
    provider_route,
    provider_secrets,
)
from providers.models import Provider

DEFAULT_QUESTION = "What is the capital of France?"


@dataclass(frozen=True)
class ProviderCheck:
    """What the check found: the answer and the call's figures, or what the provider said
    when it failed. Both scrubbed of the provider's secrets: they are shown to staff."""

    answer: str | None
    result: ProviderResult | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def figures(self) -> str:
        result = self.result
        return (
            f"tokens: {result.input_tokens} in, {result.output_tokens} out; "
            f"{result.duration_s:.2f} s; optimisations: "
            f"{', '.join(result.applied_optimizations) or 'none'}"
        )


def provider_check(*, provider: Provider, question: str = DEFAULT_QUESTION) -> ProviderCheck:
    if provider.kind == Provider.Kind.POOL:
        # A pool has no engine of its own: each member is a provider, checked by itself.
        members = ", ".join(
            provider.pool_members.order_by("position").values_list("member__name", flat=True)
        )
        return ProviderCheck(
            answer=None,
            result=None,
            error=f"{provider.name} is a pool: check its members ({members or 'none yet'}).",
        )
    try:
        result = provider_execute(
            provider=provider,
            program=dspy.Predict("question -> answer"),
            inputs={"question": question},
        )
    except (dspy.LMError, AdapterParseError) as exc:
        # What the provider said, without its key (an endpoint may echo the request's
        # Authorization header).
        return ProviderCheck(
            answer=None, result=None, error=provider_error_detail(provider=provider, error=exc)
        )
    answer = scrub(str(result.outputs["answer"]), secrets=provider_secrets(provider=provider))
    return ProviderCheck(answer=answer, result=result, error=None)


def provider_check_task(provider_id: int) -> ProviderCheck:
    """The django-q2 task behind `provider_check_where_it_runs`."""
    return provider_check(provider=Provider.objects.get(pk=provider_id))


def provider_check_where_it_runs(*, provider: Provider, wait_s: float) -> ProviderCheck:
    """The check, run where the provider's executions run: a local model lives in the
    inference workers, and loading it into a web process would cost that process the model's
    memory for good. Other providers are checked here and now."""
    cluster = provider_route(provider=provider).cluster
    if cluster is None:
        return provider_check(provider=provider)
    task_id = async_task(
        "providers.probe.provider_check_task",
        provider.pk,
        q_options={"cluster": cluster, "task_name": f"provider-check-{provider.name}"},
    )
    check = result(task_id, wait=int(wait_s * 1000))
    if check is None:
        return ProviderCheck(
            answer=None,
            result=None,
            error=(
                f"no answer from the {cluster!r} cluster within {wait_s:g} s (is it running? "
                f"the check is still queued and runs when a worker is free)"
            ),
        )
    return check
