"""Liveness and readiness probes: no authentication, no throttling, cheap, no secrets.

Readiness means this installation can run executions: the database answers, every migration
is applied, each django-q2 cluster the executions need has a worker that reported within
`MONITORING_PROCESS_STALE_AFTER_S` (`tasks` always, `inference` while a local provider is
enabled), and the default provider is usable (a local one's model directory holds a loadable
model; a remote or custom one is configured). A fresh start is ready once its workers have
sent their first heartbeat (`monitoring.processes`), a few seconds after they start.

An installation with no provider at all is ready: the admin console, through which one is
added, must stay reachable, and taking every process out of rotation would hide it.
"""

import json
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.utils import Error as DatabaseError
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.secrets import known_secrets, scrub
from monitoring.processes import service_process_clusters_alive
from providers.calls import providers_routed_to
from providers.exceptions import NoProviderConfigured
from providers.models import Provider
from providers.selectors import provider_get_default
from providers.validation import provider_config_errors

_health_response = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(),
        "checks": serializers.DictField(child=serializers.BooleanField(), required=False),
        "failing": serializers.DictField(child=serializers.CharField(), required=False),
    },
)


@dataclass(frozen=True)
class Check:
    ok: bool
    # Why it failed, for the operator reading the probe (never a secret); "" when it passed.
    reason: str = ""


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
    """The installation can run executions: 503 names each failing check and why."""

    @extend_schema(responses={200: _health_response, 503: _health_response}, tags=["health"])
    def get(self, request):
        checks = readiness_checks()
        # A reason may quote operator-supplied text (an engine's import error): scrubbed.
        secrets = known_secrets()
        failing = {
            name: scrub(check.reason, secrets=secrets)
            for name, check in checks.items()
            if not check.ok
        }
        body = {
            "status": "unavailable" if failing else "ok",
            "checks": {name: check.ok for name, check in checks.items()},
        }
        if failing:
            body["failing"] = failing
        return Response(body, status=503 if failing else 200)


def readiness_checks() -> dict[str, Check]:
    database = _database_check()
    if not database.ok:
        # Every other check reads the database.
        skipped = Check(False, "Not checked: the database does not answer.")
        return {"database": database, "migrations": skipped}
    checks = {"database": database, "migrations": _migrations_check()}
    if not checks["migrations"].ok:
        return checks
    try:
        checks |= _cluster_checks()
        checks["default_provider"] = _default_provider_check()
    except DatabaseError:
        checks["database"] = Check(False, "The database stopped answering during the checks.")
    return checks


def _database_check() -> Check:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
            if cursor.fetchone() == (1,):
                return Check(True)
    except DatabaseError:
        pass
    return Check(False, "The database does not answer.")


# Once every migration is applied it stays so for the life of the process (a release that
# brings new ones starts new processes), so the positive answer is kept and later probes skip
# reading the migration graph.
_migrations_applied = False


def _migrations_check() -> Check:
    global _migrations_applied
    if _migrations_applied:
        return Check(True)
    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError:
        return Check(False, "The applied migrations could not be read.")
    if plan:
        return Check(
            False, f"{len(plan)} migration(s) not applied: run `manage.py migrate` (bootstrap)."
        )
    _migrations_applied = True
    return Check(True)


def _cluster_checks() -> dict[str, Check]:
    tasks = settings.Q_CLUSTER.get("name", "default")
    # Named as `serve --clusters` names them: `cluster_tasks`, then `cluster_<name>` of each
    # inference cluster that serves an enabled local provider.
    wanted = {"cluster_tasks": tasks}
    local = Provider.objects.filter(enabled=True, kind=Provider.Kind.MLX)
    for inference in settings.Q_INFERENCE_CLUSTERS:
        if local.filter(providers_routed_to(cluster=inference)).exists():
            wanted[f"cluster_{inference}"] = inference
    alive = service_process_clusters_alive(clusters=list(wanted.values()), now=timezone.now())
    stale_after = settings.MONITORING_PROCESS_STALE_AFTER_S
    return {
        check: Check(True)
        if alive[cluster]
        else Check(
            False,
            f"No worker of the django-q2 cluster {cluster!r} reported in the last "
            f"{stale_after:g} s: is `manage.py qcluster` running"
            + ("?" if cluster == tasks else f" with Q_CLUSTER_NAME={cluster}?"),
        )
        for check, cluster in wanted.items()
    }


def _default_provider_check() -> Check:
    try:
        provider = provider_get_default()
    except NoProviderConfigured:
        return Check(True)
    errors = provider_config_errors(provider=provider)
    if errors:
        field, messages = next(iter(errors.items()))
        return Check(False, f"Default provider {provider.name!r}, {field}: {messages[0]}")
    if provider.kind == Provider.Kind.MLX:
        problem = _model_directory_problem(provider)
        if problem:
            return Check(False, f"Default provider {provider.name!r}: {problem}")
    return Check(True)


def _model_directory_problem(provider: Provider) -> str:
    """Why the local model directory could not be loaded ("" when it looks loadable): what
    `mlx_lm.load` reads first, a config naming the architecture and safetensors weights,
    checked without loading anything (MLX stays out of the web process)."""
    path = provider.model_path()
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        has_weights = any(path.glob("*.safetensors"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"the model directory {str(path)!r} has no readable config.json."
    if not isinstance(config, dict) or "model_type" not in config:
        return f"{str(path)!r}: config.json names no model_type."
    if not has_weights:
        return f"{str(path)!r} holds no weights (*.safetensors)."
    return ""
