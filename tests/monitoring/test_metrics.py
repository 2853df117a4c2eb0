"""The toolkit's own metrics on `/metrics`, counted from real executions, breaker transitions
and model loads in the test process (no multiprocess directory: its own registry), and the
multiprocess page built from files other processes wrote.

The process's registry lives as long as the test session, so counters are checked by how much
a test moved them."""

import subprocess
import sys
import textwrap

import mlx.core as mx
import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from config import gunicorn
from executions.models import Execution
from executions.services.create import execution_create
from monitoring.collectors import forget_dead_processes
from providers import breakers
from providers.mlx import runtime
from tests.support.engines import BROKEN_ENGINE, ECHO_ENGINE, INPUT_TOKENS
from tests.support.factories import CLOSED_PORT_URL, ProviderFactory, SignatureVersionFactory
from tests.support.metrics import Scrape, scrape_client
from tests.support.specs import QA_LEVEL_INPUTS, QA_LEVEL_SPEC

EXECUTIONS = "dspy_toolkit_executions_total"
DURATION_COUNT = "dspy_toolkit_execution_duration_seconds_count"
QUEUE_WAIT_COUNT = "dspy_toolkit_execution_queue_wait_seconds_count"
TOKENS = "dspy_toolkit_tokens_total"
HOPS = "dspy_toolkit_fallback_hops_total"
ATTEMPTS = "dspy_toolkit_provider_attempts_total"
ATTEMPT_DURATION_COUNT = "dspy_toolkit_provider_attempt_duration_seconds_count"
TRANSITIONS = "dspy_toolkit_breaker_transitions_total"
BREAKER_STATE = "dspy_toolkit_breaker_state"
QUEUE_DEPTH = "dspy_toolkit_queue_depth"
MODEL_LOADS = "dspy_toolkit_model_load_seconds_count"
MODEL_BYTES = "dspy_toolkit_model_resident_bytes"
QA_V1 = {"signature": "qa", "version": "1"}


class Delta:
    """How far each sample moved between two scrapes."""

    def __init__(self, before: Scrape, after: Scrape) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return self.after.value(name, **labels) - self.before.value(name, **labels)


@pytest.fixture
def qa_version(db):
    return SignatureVersionFactory(signature__name="qa", spec=QA_LEVEL_SPEC)


@pytest.fixture
def echo_provider(db):
    return ProviderFactory(name="echo", engine_path=ECHO_ENGINE)


@pytest.fixture
def broken_provider(db):
    return ProviderFactory(name="broken", engine_path=BROKEN_ENGINE)


@pytest.fixture
def run(client, django_capture_on_commit_callbacks):
    """`run(provider=...)` runs one `qa` execution to its end (Q_SYNC: inline, once its row is
    committed) and returns it with how the metrics moved."""

    def run_one(*, provider: str) -> tuple[Execution, Delta]:
        before = scrape_client(client)
        with django_capture_on_commit_callbacks(execute=True):
            execution = execution_create(
                signature="qa", inputs=QA_LEVEL_INPUTS, provider=provider
            ).execution
        execution.refresh_from_db()
        return execution, Delta(before, scrape_client(client))

    return run_one


@pytest.mark.django_db
def test_a_finished_execution_is_counted_once_with_its_labels(qa_version, echo_provider, run):
    execution, delta = run(provider="echo")
    assert execution.status == "succeeded"
    labels = {"signature": "qa", "version": "1", "provider": "echo"}
    assert delta(EXECUTIONS, **labels, status="succeeded", cause="") == 1
    assert delta(DURATION_COUNT, **labels, status="succeeded") == 1
    assert delta(QUEUE_WAIT_COUNT, **labels) == 1
    assert delta(TOKENS, **labels, direction="input") == INPUT_TOKENS
    assert delta(TOKENS, **labels, direction="output") == 1  # " Paris"
    assert delta(HOPS, signature="qa", version="1", requested_provider="echo") == 0
    assert delta.after.has(HOPS, signature="qa", version="1", requested_provider="echo")
    attempt = {"provider": "echo", "pool": "", "outcome": "succeeded"}
    assert delta(ATTEMPTS, signature="qa", version="1", **attempt, error_code="") == 1
    assert delta(ATTEMPT_DURATION_COUNT, **attempt) == 1
    # The duration observed is the one recorded on the row.
    duration_sum = "dspy_toolkit_execution_duration_seconds_sum"
    assert delta(duration_sum, **labels, status="succeeded") == pytest.approx(
        execution.execution_time_s
    )


@pytest.mark.django_db
def test_a_fallback_counts_each_attempt_and_the_hops(
    qa_version, echo_provider, broken_provider, run
):
    ProviderFactory(
        name="front",
        kind="openai",
        base_url=CLOSED_PORT_URL,
        fallbacks=(broken_provider, echo_provider),
    )
    execution, delta = run(provider="front")
    assert (execution.status, execution.provider) == ("succeeded", echo_provider)
    # The provider that answered, not the one asked for.
    assert delta(EXECUTIONS, **QA_V1, provider="echo", status="succeeded", cause="") == 1
    assert delta(HOPS, **QA_V1, requested_provider="front") == 2
    for attempt in execution.provider_attempts.select_related("provider"):
        labels = {"provider": attempt.provider.name, "pool": "", "outcome": attempt.outcome}
        assert delta(ATTEMPTS, **QA_V1, **labels, error_code=attempt.error_code) == 1
        assert delta(ATTEMPT_DURATION_COUNT, **labels) == 1
    assert execution.provider_attempts.count() == 3


@pytest.mark.django_db
def test_a_failed_execution_is_counted_under_the_requested_provider_with_its_cause(
    qa_version, broken_provider, run
):
    execution, delta = run(provider="broken")
    assert execution.status == "failed"
    labels = {**QA_V1, "provider": "broken"}
    assert delta(EXECUTIONS, **labels, status="failed", cause=execution.error_cause) == 1
    assert delta(DURATION_COUNT, **labels, status="failed") == 1
    attempt = execution.provider_attempts.get()
    assert attempt.error_code
    assert delta(ATTEMPTS, **labels, pool="", outcome="failed", error_code=attempt.error_code) == 1


@pytest.mark.django_db
def test_breaker_transitions_are_counted_once_committed_and_the_state_read_from_the_database(
    client, echo_provider, broken_provider, django_capture_on_commit_callbacks
):
    opening = {"provider": "echo", "from_state": "closed", "to_state": "open"}
    closing = {"provider": "echo", "from_state": "open", "to_state": "closed"}
    before = scrape_client(client)
    assert before.value(BREAKER_STATE, provider="echo") == 0  # no breaker row yet: closed
    with django_capture_on_commit_callbacks(execute=True):
        breakers.breaker_force_open(provider=echo_provider)
    opened = scrape_client(client)
    assert Delta(before, opened)(TRANSITIONS, **opening) == 1
    assert opened.value(BREAKER_STATE, provider="echo") == 2
    assert opened.value(BREAKER_STATE, provider="broken") == 0

    # A transition whose transaction rolls back never happened.
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        breakers.breaker_reset(provider=echo_provider)
        raise RuntimeError("rolled back")
    assert Delta(opened, scrape_client(client))(TRANSITIONS, **closing) == 0

    with django_capture_on_commit_callbacks(execute=True):
        breakers.breaker_reset(provider=echo_provider)
    closed = scrape_client(client)
    assert Delta(opened, closed)(TRANSITIONS, **closing) == 1
    assert closed.value(BREAKER_STATE, provider="echo") == 0


@pytest.mark.django_db
def test_queue_depth_counts_queued_executions_per_cluster(
    client, qa_version, echo_provider, tiny_model_dir, django_capture_on_commit_callbacks
):
    ProviderFactory(name="tiny", kind="mlx", model=str(tiny_model_dir))
    assert scrape_client(client).value(QUEUE_DEPTH, cluster="default") == 0
    # Not committed (the test's transaction): they stay queued.
    with django_capture_on_commit_callbacks(execute=False):
        for provider in ("echo", "echo", "tiny"):
            execution_create(signature="qa", inputs=QA_LEVEL_INPUTS, provider=provider)
    page = scrape_client(client)
    assert page.value(QUEUE_DEPTH, cluster="default") == 2
    assert page.value(QUEUE_DEPTH, cluster="inference") == 1


@pytest.mark.django_db
def test_without_the_database_the_page_still_serves_the_process_metrics(client, echo_provider):
    assert scrape_client(client).has(BREAKER_STATE, provider="echo")
    # A transaction the database aborted: every query fails until it ends.
    with transaction.atomic():
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
        with pytest.raises(DatabaseError):
            Execution.objects.exists()
        page = scrape_client(client)
        transaction.set_rollback(True)
    assert page.series(BREAKER_STATE) == []
    assert page.series(QUEUE_DEPTH) == []
    assert page.series("python_info")


@pytest.mark.django_db
def test_a_model_load_is_timed_and_its_memory_held_until_unloaded(client, tiny_model_dir):
    path = str(tiny_model_dir)
    runtime.unload_model(model_path=path)
    model = tiny_model_dir.name
    weights = sum(
        array.nbytes for array in mx.load(str(tiny_model_dir / "model.safetensors")).values()
    )
    before = scrape_client(client)
    try:
        runtime.load_model(model_path=path, optimize=False)
        loaded = scrape_client(client)
    finally:
        runtime.unload_model(model_path=path)
    assert Delta(before, loaded)(MODEL_LOADS, model=model) == 1
    assert Delta(before, loaded)(MODEL_BYTES, model=model) == weights
    assert scrape_client(client).value(MODEL_BYTES, model=model) == before.value(
        MODEL_BYTES, model=model
    )


# Multiprocess mode: what other processes wrote -----------------------------------------------

# A process counting into the directory the way a worker does; it exits once it reads a line.
_WORKER = textwrap.dedent(
    """
    import sys
    from monitoring import prometheus
    prometheus.breaker_transitions_total.labels(
        provider="echo", from_state="closed", to_state="open"
    ).inc()
    prometheus.model_resident_bytes.labels(model="m").inc(int(sys.argv[1]))
    print("counted", flush=True)
    sys.stdin.readline()
    """
)


def _worker(directory, resident_bytes: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(resident_bytes)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
        cwd=settings.BASE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "counted\n"
    return process


def _exit(process: subprocess.Popen) -> None:
    process.communicate("\n", timeout=30)
    assert process.returncode == 0


@pytest.mark.django_db
def test_the_page_adds_up_every_process_and_forgets_the_live_gauges_of_dead_ones(
    client, tmp_path, monkeypatch, echo_provider
):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gone, alive = _worker(tmp_path, 100), _worker(tmp_path, 50)
    _exit(gone)
    try:
        page = scrape_client(client)
        # Counters of the process that exited stay; its live gauge does not.
        assert page.value(TRANSITIONS, provider="echo", from_state="closed", to_state="open") == 2
        assert page.value(MODEL_BYTES, model="m") == 50
        # The database's state is on the multiprocess page too.
        assert page.value(BREAKER_STATE, provider="echo") == 0
    finally:
        _exit(alive)
    page = scrape_client(client)
    assert page.value(TRANSITIONS, provider="echo", from_state="closed", to_state="open") == 2
    assert not page.has(MODEL_BYTES, model="m")


def test_gunicorn_drops_the_live_gauges_of_a_worker_that_exited(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    worker = _worker(tmp_path, 10)
    try:
        live = tmp_path / f"gauge_livesum_{worker.pid}.db"
        # The scrape's own check leaves a running process alone.
        forget_dead_processes(tmp_path)
        assert live.exists()
        # gunicorn calls the hook with its worker object once it reaped the worker; the hook
        # reads only its pid.
        gunicorn.child_exit(None, worker)
        assert not live.exists()
        assert (tmp_path / f"counter_{worker.pid}.db").exists()
    finally:
        _exit(worker)


@pytest.mark.django_db
def test_cache_reads_and_database_queries_are_counted(client):
    from django.core.cache import cache

    before = scrape_client(client)
    cache.set("metrics-probe", None)  # a cached None is a hit, not a miss
    assert cache.get("metrics-probe", "default") is None
    assert cache.get("metrics-absent", "default") == "default"
    after = scrape_client(client)
    moved = Delta(before, after)
    assert moved("django_cache_get_total", backend="database") == 2
    assert moved("django_cache_get_hits_total", backend="database") == 1
    assert moved("django_cache_get_misses_total", backend="database") == 1
    # django-prometheus' database backend counts this process's queries too.
    assert moved("django_db_execute_total", alias="default", vendor="postgresql") > 0
