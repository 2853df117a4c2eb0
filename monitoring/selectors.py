"""Reads of the operator's console: traffic, latency, queues, breakers and usage per client.

Every figure is computed by the database: each function runs a fixed number of queries
whatever the number of executions, and returns at most a few rows per group (signature,
provider, client, time bucket). The queries are portable between SQLite (the quick start) and
PostgreSQL: percentiles use window functions, not PostgreSQL's `percentile_cont`.

Percentiles are nearest-rank: the p-th percentile of n values is the value at rank
ceil(p * n / 100) in ascending order, so it is always a latency that was measured.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import (
    Count,
    DateTimeField,
    F,
    FloatField,
    Func,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    TextChoices,
    Value,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber
from django.db.models.lookups import GreaterThanOrEqual, LessThan
from django.utils import timezone

from executions.models import Execution
from providers.calls import providers_routed_to
from providers.models import BreakerEvent, Provider

PERCENTILES = (50, 95, 99)
LATEST_FAILURES = 10
FAILED_STATUSES = (Execution.Status.FAILED, Execution.Status.TIMED_OUT)
# What the console groups executions by (server-side names, never request data).
GROUP_LABELS = {
    "signature": F("signature_version__signature__name"),
    # The provider that answered, else the one asked for (a failed execution has no answer).
    "provider": Coalesce(F("provider__name"), F("requested_provider__name")),
}


class ConsoleWindow(TextChoices):
    HOUR = "hour", "Last hour"
    DAY = "day", "Last day"
    WEEK = "week", "Last week"


@dataclass(frozen=True)
class WindowSpan:
    length: timedelta
    # Per-minute points over an hour, then wider buckets, so a chart has a sane number of
    # points (60, 96, 168) and each point still averages enough executions to mean much.
    bucket: timedelta


WINDOW_SPANS = {
    ConsoleWindow.HOUR: WindowSpan(timedelta(hours=1), timedelta(minutes=1)),
    ConsoleWindow.DAY: WindowSpan(timedelta(days=1), timedelta(minutes=15)),
    ConsoleWindow.WEEK: WindowSpan(timedelta(days=7), timedelta(hours=1)),
}


class TimeBucket(Func):
    """The start of the `seconds`-wide bucket a datetime falls in, buckets aligned on the Unix
    epoch (so in UTC). Native arithmetic on both databases: Django's `Trunc` is a Python
    function on SQLite, called for every row in every window partition, which made the week's
    latency series take seconds there."""

    output_field = DateTimeField()

    def __init__(self, expression, *, seconds: int) -> None:
        super().__init__(expression)
        self.seconds = seconds

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return (
            f"to_timestamp(floor(extract(epoch from {sql}) / %s) * %s)",
            (*params, self.seconds, self.seconds),
        )

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return (
            f"strftime('%%Y-%%m-%%d %%H:%%M:%%S', "
            f"(CAST(strftime('%%s', {sql}) AS INTEGER) / %s) * %s, 'unixepoch')",
            (*params, self.seconds, self.seconds),
        )


class SecondsBetween(Func):
    """Seconds from `start` to `end`, in native arithmetic on both databases (Django's duration
    arithmetic is a Python function on SQLite)."""

    output_field = FloatField()

    def as_postgresql(self, compiler, connection, **extra):
        (end, end_params), (start, start_params) = (
            compiler.compile(expression) for expression in self.source_expressions
        )
        return f"extract(epoch from ({end} - {start}))::float", (*end_params, *start_params)

    def as_sqlite(self, compiler, connection, **extra):
        (end, end_params), (start, start_params) = (
            compiler.compile(expression) for expression in self.source_expressions
        )
        return f"((julianday({end}) - julianday({start})) * 86400.0)", (*end_params, *start_params)


def bucket_start(moment: datetime, bucket: timedelta) -> datetime:
    """What `TimeBucket` computes, in Python."""
    seconds = int(bucket.total_seconds())
    return datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, tz=UTC)


@dataclass(frozen=True)
class ExecutionStats:
    """Counts, tokens and latency (execution time, s) of a set of executions."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    in_flight: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    # Percentile (50, 95, 99) -> seconds; absent when no execution finished with a time.
    latency_s: dict[int, float] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def success_rate(self) -> float | None:
        """Succeeded among those that succeeded, failed or timed out (a cancellation is the
        client's choice, not a failure); None when none has."""
        return self.succeeded / self.finished if self.finished else None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class GroupStats:
    label: str
    stats: ExecutionStats


@dataclass(frozen=True)
class SeriesPoint:
    start: datetime
    stats: ExecutionStats


@dataclass(frozen=True)
class QueueStats:
    """Executions waiting for one django-q2 cluster now."""

    cluster: str
    queued: int
    oldest_queued_at: datetime | None


@dataclass(frozen=True)
class BreakerStatus:
    provider: str
    state: str
    forced: bool
    state_changed_at: datetime | None
    last_from: str | None = None
    last_to: str | None = None
    last_reason: str | None = None
    last_at: datetime | None = None


@dataclass(frozen=True)
class ClientUsage:
    """One client's executions: an API key's, or a staff user's own session requests."""

    api_key_id: str | None
    name: str
    stats: ExecutionStats


@dataclass(frozen=True)
class Console:
    window: str
    since: datetime
    until: datetime
    bucket: timedelta
    summary: ExecutionStats
    series: list[SeriesPoint]
    by_signature: list[GroupStats]
    by_provider: list[GroupStats]
    queues: list[QueueStats]
    # Percentile -> seconds from queued to claimed, over the executions claimed in the window.
    queue_wait_s: dict[int, float]
    breakers: list[BreakerStatus]
    latest_failures: list[Execution]


def window_bounds(*, window: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The window's start and end (now)."""
    until = now or timezone.now()
    return until - WINDOW_SPANS[ConsoleWindow(window)].length, until


def executions_in(*, since: datetime, until: datetime) -> QuerySet[Execution]:
    """Executions that arrived (were queued) in [since, until)."""
    return Execution.objects.filter(queued_at__gte=since, queued_at__lt=until)


# Aggregates -------------------------------------------------------------------------------------

_COUNTS = {
    "total": Count("pk"),
    "succeeded": Count("pk", filter=Q(status=Execution.Status.SUCCEEDED)),
    "failed": Count("pk", filter=Q(status__in=FAILED_STATUSES)),
    "cancelled": Count("pk", filter=Q(status=Execution.Status.CANCELLED)),
    "in_flight": Count(
        "pk", filter=Q(status__in=[Execution.Status.QUEUED, Execution.Status.RUNNING])
    ),
    "input_tokens": Coalesce(Sum("input_tokens"), 0),
    "output_tokens": Coalesce(Sum("output_tokens"), 0),
}


def _percentile_rows(
    queryset: QuerySet, *, value, partition: dict[str, object]
) -> Iterable[tuple[tuple, int, object]]:
    """(group key, percentile, value) for each percentile of each group, in one query.

    Each row is ranked within its group by `value`; only the rows at a percentile's rank
    come back, so at most len(PERCENTILES) rows per group, however many rows the group has.
    """
    names = list(partition)
    ranked = (
        queryset.annotate(**partition, _value=value)
        .filter(_value__isnull=False)
        .annotate(
            _rank=Window(
                RowNumber(),
                partition_by=[F(name) for name in names] or None,
                order_by=[F("_value").asc(), F("pk").asc()],
            ),
            _count=Window(Count("pk"), partition_by=[F(name) for name in names] or None),
        )
    )
    # The row at rank ceil(p * n / 100): rank * 100 >= p * n > (rank - 1) * 100, in integers.
    at_a_percentile = Q()
    for percentile in PERCENTILES:
        at_a_percentile |= Q(
            GreaterThanOrEqual(F("_rank") * 100, F("_count") * percentile),
            LessThan((F("_rank") - 1) * 100, F("_count") * percentile),
        )
    for row in ranked.filter(at_a_percentile).values(*names, "_rank", "_count", "_value"):
        for percentile in PERCENTILES:
            if row["_rank"] * 100 >= percentile * row["_count"] > (row["_rank"] - 1) * 100:
                yield tuple(row[name] for name in names), percentile, row["_value"]


def _latency_percentiles(queryset: QuerySet, partition: dict[str, object]) -> dict:
    found: dict[tuple, dict[int, float]] = {}
    for key, percentile, seconds in _percentile_rows(
        queryset.filter(status__in=[Execution.Status.SUCCEEDED, *FAILED_STATUSES]),
        value=F("execution_time_s"),
        partition=partition,
    ):
        found.setdefault(key, {})[percentile] = seconds
    return found


def _stats(row: dict, latency: dict[int, float] | None) -> ExecutionStats:
    return ExecutionStats(**{name: row[name] for name in _COUNTS}, latency_s=latency or {})


def execution_stats(*, queryset: QuerySet[Execution]) -> ExecutionStats:
    """Counts, tokens and latency percentiles of `queryset` (two queries)."""
    row = queryset.aggregate(**_COUNTS)
    return _stats(row, _latency_percentiles(queryset, {}).get(()))


def execution_stats_by(*, queryset: QuerySet[Execution], group: str) -> list[GroupStats]:
    """Stats per signature or per provider (`group`), busiest first (two queries)."""
    partition = {"_label": GROUP_LABELS[group]}
    rows = queryset.annotate(**partition).values("_label").annotate(**_COUNTS)
    latency = _latency_percentiles(queryset, partition)
    groups = [
        GroupStats(label=row["_label"], stats=_stats(row, latency.get((row["_label"],))))
        for row in rows.order_by()
    ]
    return sorted(groups, key=lambda group: (-group.stats.total, group.label))


def execution_series(
    *, queryset: QuerySet[Execution], since: datetime, until: datetime, span: WindowSpan
) -> list[SeriesPoint]:
    """Stats per time bucket of `span` from `since` to `until`, empty buckets included
    (two queries)."""
    partition = {"_bucket": TimeBucket("queued_at", seconds=int(span.bucket.total_seconds()))}
    rows = {
        row["_bucket"]: row
        for row in queryset.annotate(**partition).values("_bucket").annotate(**_COUNTS).order_by()
    }
    latency = _latency_percentiles(queryset, partition)
    empty = dict.fromkeys(_COUNTS, 0)
    points = []
    start = bucket_start(since, span.bucket)
    while start < until:
        points.append(SeriesPoint(start, _stats(rows.get(start, empty), latency.get((start,)))))
        start += span.bucket
    return points


# Queues, breakers, failures ----------------------------------------------------------------------


def execution_queues() -> list[QueueStats]:
    """Executions queued now per cluster (the default one and every inference cluster), with
    the oldest one's arrival: one query, routed by the rule that routes their tasks."""
    clusters = queue_clusters()
    aggregates = {}
    for index, (_, cluster) in enumerate(clusters):
        routed = Provider.objects.filter(providers_routed_to(cluster=cluster))
        aggregates[f"queued_{index}"] = Count("pk", filter=Q(requested_provider__in=routed))
        aggregates[f"oldest_{index}"] = Min("queued_at", filter=Q(requested_provider__in=routed))
    row = Execution.objects.filter(status=Execution.Status.QUEUED).aggregate(**aggregates)
    return [
        QueueStats(
            cluster=name, queued=row[f"queued_{index}"], oldest_queued_at=row[f"oldest_{index}"]
        )
        for index, (name, _) in enumerate(clusters)
        if row[f"queued_{index}"]
    ]


def queue_clusters() -> list[tuple[str, str | None]]:
    """(name, cluster for `providers_routed_to`) of every django-q2 cluster executions queue for:
    the default one (cluster None), then each inference cluster."""
    return [
        (settings.Q_CLUSTER["name"], None),
        *((name, name) for name in settings.Q_INFERENCE_CLUSTERS),
    ]


def execution_queue_wait(*, since: datetime, until: datetime) -> dict[int, float]:
    """Percentiles of the wait from queued to claimed (s) of executions claimed in the window
    (one query)."""
    claimed = Execution.objects.filter(started_at__gte=since, started_at__lt=until)
    wait = SecondsBetween(F("started_at"), F("queued_at"))
    # To the millisecond: SQLite's julianday arithmetic is not exact below that.
    return {
        percentile: round(waited, 3)
        for _, percentile, waited in _percentile_rows(claimed, value=wait, partition={})
    }


def breaker_statuses() -> list[BreakerStatus]:
    """Every provider's breaker with its latest transition (one query); a provider whose
    breaker was never used reads closed."""
    latest = BreakerEvent.objects.filter(breaker__provider=OuterRef("pk")).order_by("-at", "-id")
    rows = Provider.objects.annotate(
        state=Coalesce(F("circuit_breaker__state"), Value("closed")),
        forced=Coalesce(F("circuit_breaker__forced"), Value(False)),
        state_changed_at=F("circuit_breaker__state_changed_at"),
        last_from=Subquery(latest.values("from_state")[:1]),
        last_to=Subquery(latest.values("to_state")[:1]),
        last_reason=Subquery(latest.values("reason")[:1]),
        last_at=Subquery(latest.values("at")[:1]),
    ).order_by("name")
    return [
        BreakerStatus(
            provider=row["name"], **{key: value for key, value in row.items() if key != "name"}
        )
        for row in rows.values(
            "name",
            "state",
            "forced",
            "state_changed_at",
            "last_from",
            "last_to",
            "last_reason",
            "last_at",
        )
    ]


def execution_latest_failures(*, limit: int = LATEST_FAILURES) -> list[Execution]:
    """The latest failed or timed-out executions, newest first (one query)."""
    return list(
        Execution.objects.filter(status__in=FAILED_STATUSES)
        .select_related("signature_version__signature", "requested_provider", "provider")
        .order_by("-finished_at", "-id")[:limit]
    )


def console_get(*, window: str, now: datetime | None = None) -> Console:
    """Everything the dashboard shows for `window` (a fixed number of queries)."""
    since, until = window_bounds(window=window, now=now)
    span = WINDOW_SPANS[ConsoleWindow(window)]
    executions = executions_in(since=since, until=until)
    return Console(
        window=window,
        since=since,
        until=until,
        bucket=span.bucket,
        summary=execution_stats(queryset=executions),
        series=execution_series(queryset=executions, since=since, until=until, span=span),
        by_signature=execution_stats_by(queryset=executions, group="signature"),
        by_provider=execution_stats_by(queryset=executions, group="provider"),
        queues=execution_queues(),
        queue_wait_s=execution_queue_wait(since=since, until=until),
        breakers=breaker_statuses(),
        latest_failures=execution_latest_failures(),
    )


# Usage per client -------------------------------------------------------------------------------


def usage_by_client(*, since: datetime, until: datetime) -> list[ClientUsage]:
    """Each client's usage in the window, busiest first (two queries): per API key, and per
    staff user for the requests they made with their session."""
    executions = executions_in(since=since, until=until)
    partition = {"_key": F("api_key_id"), "_user": F("created_by_id")}
    rows = (
        executions.annotate(**partition)
        .values("_key", "_user", "api_key__name", "api_key__prefix", "created_by__username")
        .annotate(**_COUNTS)
        .order_by()
    )
    latency = _latency_percentiles(executions, partition)
    clients = [
        ClientUsage(
            api_key_id=row["_key"],
            name=_client_name(row),
            stats=_stats(row, latency.get((row["_key"], row["_user"]))),
        )
        for row in rows
    ]
    return sorted(clients, key=lambda client: (-client.stats.total, client.name))


def _client_name(row: dict) -> str:
    if row["_key"] is not None:
        return f"{row['api_key__name']} ({row['api_key__prefix']}…)"
    if row["_user"] is not None:
        return f"user {row['created_by__username']}"
    # Neither: made by a command, or by a user since deleted.
    return "no client"


def usage_for_client(
    *, client: Q, since: datetime, until: datetime
) -> tuple[ExecutionStats, list[GroupStats]]:
    """One client's usage in the window (`client`: `executions.selectors.execution_client_scope`),
    in all and per signature (four queries)."""
    executions = executions_in(since=since, until=until).filter(client)
    return (
        execution_stats(queryset=executions),
        execution_stats_by(queryset=executions, group="signature"),
    )
