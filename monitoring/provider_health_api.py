"""`GET /api/v1/providers/{name}/health`: a provider's breaker now and its recent calls.

For staff with `providers.view_provider`, like the provider's configuration: the figures
describe the service's traffic, which is not every client's business.
"""

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import ModelPermissionsWithView
from core.api.schema import error_response
from monitoring.provider_health import provider_health, provider_health_window
from providers.choices import BreakerState
from providers.models import Provider
from providers.selectors import provider_get


class BreakerTransitionSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    from_state = serializers.ChoiceField(choices=BreakerState.choices)
    to_state = serializers.ChoiceField(choices=BreakerState.choices)
    reason = serializers.CharField()


class BreakerStatusSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=BreakerState.choices, help_text="The state stored by the last transition."
    )
    effective_state = serializers.ChoiceField(
        choices=BreakerState.choices,
        help_text=(
            "What the next call finds: an open breaker whose wait has passed is `half_open` "
            "(`ready_for_trial`); a half-open one whose trial calls never reported is `open`."
        ),
    )
    forced = serializers.BooleanField(help_text="Forced open by an operator until reset.")
    ready_for_trial = serializers.BooleanField(
        help_text="Open, its wait over: the next call is a trial call."
    )
    trials_resume_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When trial calls are (or were) admitted again; null unless open, not forced.",
    )
    state_changed_at = serializers.DateTimeField()
    calls_in_window = serializers.IntegerField(
        help_text="Calls recorded in the current state (the closed window or the trial calls)."
    )
    failures_in_window = serializers.IntegerField()
    failure_rate = serializers.FloatField(allow_null=True, help_text="Percent; null: no calls.")
    slow_call_rate = serializers.FloatField(allow_null=True, help_text="Percent; null: no calls.")
    slow_call_duration_s = serializers.FloatField(help_text="A call this long counts as slow.")
    half_open_permits_issued = serializers.IntegerField()
    half_open_permitted_calls = serializers.IntegerField()
    last_transition = BreakerTransitionSerializer(allow_null=True)
    summary = serializers.CharField(help_text="The same, in one line for a person.")


class CallStatsSerializer(serializers.Serializer):
    since = serializers.DateTimeField(help_text="Start of the window the figures cover.")
    calls = serializers.IntegerField(help_text="Calls made (succeeded or failed).")
    failed = serializers.IntegerField()
    rejected = serializers.IntegerField(help_text="Calls the open breaker refused.")
    slow = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True, help_text="Percent of calls made.")
    slow_call_rate = serializers.FloatField(allow_null=True, help_text="Percent of calls made.")
    latency_p50_s = serializers.FloatField(allow_null=True)
    latency_p95_s = serializers.FloatField(allow_null=True)
    latency_p99_s = serializers.FloatField(allow_null=True)
    sampled = serializers.BooleanField(
        help_text="More calls were made in the window than the figures cover (the most recent)."
    )


class LastErrorSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    code = serializers.CharField()
    message = serializers.CharField(help_text="The toolkit's message, as clients see it.")


class ProviderHealthSerializer(serializers.Serializer):
    provider = serializers.CharField()
    enabled = serializers.BooleanField()
    as_of = serializers.DateTimeField()
    breaker = BreakerStatusSerializer()
    calls = CallStatsSerializer()
    last_error = LastErrorSerializer(
        allow_null=True, help_text="The most recent failed call, whatever its age."
    )


_EXAMPLE = {
    "provider": "remote-vllm",
    "enabled": True,
    "as_of": "2026-01-05T10:00:40Z",
    "breaker": {
        "state": "open",
        "effective_state": "half_open",
        "forced": False,
        "ready_for_trial": True,
        "trials_resume_at": "2026-01-05T10:00:30Z",
        "state_changed_at": "2026-01-05T10:00:00Z",
        "calls_in_window": 0,
        "failures_in_window": 0,
        "failure_rate": None,
        "slow_call_rate": None,
        "slow_call_duration_s": 60.0,
        "half_open_permits_issued": 0,
        "half_open_permitted_calls": 3,
        "last_transition": {
            "at": "2026-01-05T10:00:00Z",
            "from_state": "closed",
            "to_state": "open",
            "reason": "failure rate 60% over the last 10 calls reached the threshold of 50%",
        },
        "summary": "half_open (ready for a trial since 2026-01-05 10:00:30 UTC), no calls recorded",
    },
    "calls": {
        "since": "2026-01-05T09:00:40Z",
        "calls": 10,
        "failed": 6,
        "rejected": 4,
        "slow": 0,
        "error_rate": 60.0,
        "slow_call_rate": 0.0,
        "latency_p50_s": 0.41,
        "latency_p95_s": 1.9,
        "latency_p99_s": 2.3,
        "sampled": False,
    },
    "last_error": {
        "at": "2026-01-05T09:59:58Z",
        "code": "provider_server_error",
        "message": "The provider remote-vllm answered HTTP 500 (server error).",
    },
}


class ProviderHealthApi(APIView):
    permission_classes = [IsAuthenticated, ModelPermissionsWithView]
    # For the model permissions: reading needs `providers.view_provider`.
    queryset = Provider.objects.none()

    @extend_schema(
        operation_id="providers_health",
        summary="Get a provider's health",
        description=(
            "The provider's circuit breaker as the next call would find it, and the figures of "
            "its recent calls (`MONITORING_PROVIDER_HEALTH_WINDOW_S`): error and slow-call "
            "rates, latency percentiles, calls refused by the breaker, and the last error."
        ),
        tags=["providers"],
        parameters=[
            OpenApiParameter(
                "name",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="The provider's name.",
                examples=[OpenApiExample("remote-vllm", value="remote-vllm")],
            )
        ],
        responses={200: ProviderHealthSerializer, 404: error_response("Unknown provider.")},
        examples=[OpenApiExample("An open breaker ready for a trial", value=_EXAMPLE)],
    )
    def get(self, request: Request, name: str) -> Response:
        health = provider_health(
            provider=provider_get(name=name), window=provider_health_window(), now=timezone.now()
        )
        return Response(ProviderHealthSerializer(health).data)
