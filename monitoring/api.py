"""`GET /api/v1/usage`: a client's own usage over a window (an API key's executions, or a staff
user's own session requests), never anyone else's."""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_api_key.models import APIKey

from executions.selectors import execution_client_scope
from monitoring.selectors import (
    PERCENTILES,
    ConsoleWindow,
    ExecutionStats,
    usage_for_client,
    window_bounds,
)


class UsageQuerySerializer(serializers.Serializer):
    window = serializers.ChoiceField(
        choices=ConsoleWindow.choices,
        default=ConsoleWindow.HOUR,
        help_text="The last hour, day or week, ending now.",
    )


class LatencySerializer(serializers.Serializer):
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class UsageStatsSerializer(serializers.Serializer):
    executions = serializers.IntegerField(help_text="Executions that arrived in the window.")
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Failed or timed out.")
    cancelled = serializers.IntegerField()
    in_flight = serializers.IntegerField(help_text="Still queued or running.")
    success_rate = serializers.FloatField(
        allow_null=True,
        help_text="Succeeded among succeeded, failed and timed out; null when none finished.",
    )
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    latency_s = LatencySerializer(
        help_text="Percentiles (nearest-rank) of the execution time, in seconds; null when no "
        "execution finished."
    )


class SignatureUsageSerializer(UsageStatsSerializer):
    signature = serializers.CharField()


class UsageSerializer(UsageStatsSerializer):
    window = serializers.ChoiceField(choices=ConsoleWindow.choices)
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    by_signature = SignatureUsageSerializer(many=True)


def _stats(stats: ExecutionStats) -> dict:
    return {
        "executions": stats.total,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "in_flight": stats.in_flight,
        "success_rate": stats.success_rate,
        "input_tokens": stats.input_tokens,
        "output_tokens": stats.output_tokens,
        "latency_s": {f"p{p}": stats.latency_s.get(p) for p in PERCENTILES},
    }


_QA_USAGE = {
    "executions": 120,
    "succeeded": 114,
    "failed": 4,
    "cancelled": 2,
    "in_flight": 0,
    "success_rate": 0.9661,
    "input_tokens": 6240,
    "output_tokens": 360,
    "latency_s": {"p50": 0.41, "p95": 1.12, "p99": 2.3},
}


class UsageView(APIView):
    """The caller's own usage over a window."""

    @extend_schema(
        operation_id="usage_get",
        summary="Your usage",
        description=(
            "Executions, errors, tokens and latency of the caller's own executions that arrived "
            "in the window (the last hour, day or week), in all and per signature: an API key "
            "sees its executions, a staff session the requests made with it. Nobody sees "
            "another client's usage."
        ),
        parameters=[
            OpenApiParameter(
                "window",
                enum=ConsoleWindow.values,
                default=ConsoleWindow.HOUR,
                description="The last `hour` (default), `day` or `week`, ending now.",
                examples=[OpenApiExample("A day", value="day")],
            )
        ],
        responses={200: UsageSerializer},
        examples=[
            OpenApiExample(
                "A day of one client",
                response_only=True,
                status_codes=["200"],
                value={
                    "window": "day",
                    "since": "2026-01-04T10:00:00Z",
                    "until": "2026-01-05T10:00:00Z",
                    **_QA_USAGE,
                    "by_signature": [{"signature": "qa", **_QA_USAGE}],
                },
            ),
            OpenApiExample(
                "An unknown window",
                response_only=True,
                status_codes=["400"],
                value={
                    "code": "invalid_request",
                    "message": "The request is invalid; see `errors` for each field.",
                    "errors": {
                        "window": [
                            {"code": "invalid_choice", "message": '"year" is not a valid choice.'}
                        ]
                    },
                },
            ),
        ],
        tags=["usage"],
    )
    def get(self, request):
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        window = query.validated_data["window"]
        api_key = request.auth if isinstance(request.auth, APIKey) else None
        client = execution_client_scope(api_key=api_key, user=None if api_key else request.user)
        since, until = window_bounds(window=window)
        total, by_signature = usage_for_client(client=client, since=since, until=until)
        body = {
            "window": window,
            "since": since,
            "until": until,
            **_stats(total),
            "by_signature": [
                {"signature": group.label, **_stats(group.stats)} for group in by_signature
            ],
        }
        return Response(UsageSerializer(body).data)
