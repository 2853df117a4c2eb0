"""Liveness and readiness probes: no authentication, no throttling, cheap."""

from django.db import connection
from django.db.utils import Error as DatabaseError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

_health_response = inline_serializer(
    "Health",
    {"status": serializers.CharField(), "checks": serializers.DictField(required=False)},
)


class _ProbeView(APIView):
    # Probes run before any client exists and often; credentials or rate limits would only
    # make an orchestrator restart a healthy process.
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []


class LiveView(_ProbeView):
    """The process is up and serving requests."""

    @extend_schema(responses={200: _health_response}, tags=["health"])
    def get(self, request):
        return Response({"status": "ok"})


class ReadyView(_ProbeView):
    """The process can do useful work: the database answers."""

    @extend_schema(responses={200: _health_response, 503: _health_response}, tags=["health"])
    def get(self, request):
        checks = {"database": _database_ok()}
        healthy = all(checks.values())
        return Response(
            {"status": "ok" if healthy else "unavailable", "checks": checks},
            status=200 if healthy else 503,
        )


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError:
        return False
