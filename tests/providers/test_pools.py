"""Pools of providers: their configuration, the policies' picks with outstanding calls counted
across processes, members' breakers, the pool's fallbacks, and a load over three real HTTP
replicas on 127.0.0.1 with one killed and one slow mid-load."""

import random
import subprocess
import time
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from executions.models import Execution, ExecutionAttempt
from executions.services.create import execution_create
from executions.services.runs import execution_claim, execution_process
from providers import breakers, services
from providers.calls import provider_route, providers_routed_with
from providers.models import BreakerEvent, Provider, ProviderLease
from providers.pools import pool_outstanding, pool_release, pool_select_member
from tests.support.engines import ECHO_ENGINE
from tests.support.factories import ProviderFactory, SignatureVersionFactory
from tests.support.metrics import scrape_client
from tests.support.pools import Replica, pool_of, run_load
from tests.support.specs import QA_LEVEL_INPUTS, QA_LEVEL_SPEC

PROVIDERS = "/api/v1/providers/"


@pytest.fixture
def qa_version(db):
    return SignatureVersionFactory(signature__name="qa", spec=QA_LEVEL_SPEC)


@pytest.fixture
def replicas():
    """`replicas(n, **options)`: n running fake replicas, closed after the test."""
    started: list[Replica] = []

    def start(count: int, **options) -> list[Replica]:
        new = [Replica(**options) for _ in range(count)]
        started.extend(new)
        return new

    yield start
    for replica in started:
        replica.close()


@pytest.fixture
def run_one(qa_version, clock, django_capture_on_commit_callbacks):
    """Create a `qa` execution on a provider and run it in this process at the clock's time."""

    def run(provider: str) -> Execution:
        with django_capture_on_commit_callbacks(execute=False):
            execution = execution_create(
                signature="qa", inputs=QA_LEVEL_INPUTS, provider=provider
            ).execution
        claim = execution_claim(execution_id=execution.id, now=clock)
        execution_process(claim=claim, now=clock)
        return Execution.objects.get(id=execution.id)

    return run


def _picks(pool: Provider, times: int, **options) -> list[str]:
    """The members picked for `times` calls made one after the other (each lease released)."""
    names = []
    for _ in range(times):
        lease = pool_select_member(pool=pool, **options)
        names.append(lease.member.name)
        breakers.breaker_release_permission(provider=lease.member)
        pool_release(lease=lease)
    return names


# Configuration -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_pool_is_created_and_read_with_its_policy_and_weighted_members(operator_client):
    ProviderFactory(name="a"), ProviderFactory(name="b")
    body = {
        "name": "pool",
        "kind": "pool",
        "policy": "weighted_round_robin",
        "members": [{"provider": "b", "weight": 3}, {"provider": "a"}],
    }
    response = operator_client.post(PROVIDERS, body, content_type="application/json")
    assert response.status_code == 201, response.json()
    read = operator_client.get(f"{PROVIDERS}pool/").json()
    assert (read["kind"], read["policy"], read["model"]) == ("pool", "weighted_round_robin", "")
    assert read["members"] == [{"provider": "b", "weight": 3}, {"provider": "a", "weight": 1}]
    changed = operator_client.patch(
        f"{PROVIDERS}pool/",
        {"members": [{"provider": "a", "weight": 2}]},
        content_type="application/json",
    )
    assert changed.json()["members"] == [{"provider": "a", "weight": 2}]
    # A provider that is no pool has none.
    assert operator_client.get(f"{PROVIDERS}a/").json()["members"] == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"members": [{"provider": "ghost"}]}, "members", "Unknown providers: ghost"),
        ({"members": [{"provider": "inner"}]}, "members", "is a pool"),
        ({"members": [{"provider": "a"}, {"provider": "a"}]}, "members", "appears twice"),
        ({"members": [{"provider": "a", "weight": 0}]}, "members", ""),
        ({"base_url": "http://127.0.0.1:9/v1"}, "base_url", "A pool has none of its own"),
        ({"model": "some-model"}, "model", "A pool has none of its own"),
        ({"policy": "fastest"}, "policy", ""),
    ],
)
def test_a_bad_pool_is_a_400_in_the_one_shape(operator_client, body, field, fragment):
    ProviderFactory(name="a")
    services.provider_create(name="inner", kind="pool")
    response = operator_client.post(
        PROVIDERS, {"name": "pool", "kind": "pool", **body}, content_type="application/json"
    )
    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"code", "message", "errors"}
    assert field in error["errors"]
    assert fragment in str(error["errors"][field])
    assert not Provider.objects.filter(name="pool").exists()


@pytest.mark.django_db
def test_a_pool_is_no_member_of_itself_and_its_members_stay_fit(tiny_model_dir):
    a, b = ProviderFactory(name="a"), ProviderFactory(name="b")
    pool = services.provider_create(name="pool", kind="pool", members=[(a, 1), (b, 1)])
    with pytest.raises(ValidationError, match="member of itself"):
        services.provider_set_members(pool=pool, members=[(pool, 1)])
    # A member cannot become a pool, nor move to another cluster than the other members.
    with pytest.raises(ValidationError, match="a pool's members are not pools"):
        services.provider_update(provider=a, data={"kind": "pool", "model": "", "engine_path": ""})
    with pytest.raises(ValidationError, match="same cluster"):
        services.provider_update(
            provider=b, data={"kind": "mlx", "model": str(tiny_model_dir), "engine_path": ""}
        )
    # A pool keeps its kind while it has members.
    with pytest.raises(ValidationError, match="cannot change its kind"):
        services.provider_update(
            provider=pool, data={"kind": "custom", "model": "x", "engine_path": ECHO_ENGINE}
        )
    a.refresh_from_db(), b.refresh_from_db(), pool.refresh_from_db()
    assert (a.kind, b.kind, pool.kind) == ("custom", "custom", "pool")


@pytest.mark.django_db
def test_a_pool_of_local_models_runs_where_they_run(tiny_model_dir):
    local = [
        ProviderFactory(name=f"local-{n}", kind="mlx", model=str(tiny_model_dir)) for n in "ab"
    ]
    remote = ProviderFactory(name="remote")
    with pytest.raises(ValidationError, match="same cluster"):
        services.provider_create(name="mixed", kind="pool", members=[(local[0], 1), (remote, 1)])
    pool = services.provider_create(name="local-pool", kind="pool", members=[(m, 1) for m in local])
    assert provider_route(provider=pool) == provider_route(provider=local[0])
    assert provider_route(provider=pool).cluster is not None
    routed = set(Provider.objects.filter(providers_routed_with(provider=pool)))
    assert pool in routed and remote not in routed
    default = set(Provider.objects.filter(providers_routed_with(provider=remote)))
    assert remote in default and pool not in default


# Picks -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_least_outstanding_splits_an_even_load_evenly_and_avoids_busy_members():
    members = [ProviderFactory(name=name) for name in "abc"]
    pool = services.provider_create(name="pool", kind="pool", members=[(m, 1) for m in members])
    assert sorted(_picks(pool, 30)) == ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    # Two calls in progress: they went to two members, and the next calls to the third.
    busy = {pool_select_member(pool=pool).member.name for _ in range(2)}
    assert len(busy) == 2
    (idle,) = {"a", "b", "c"} - busy
    assert set(_picks(pool, 5)) == {idle}


@pytest.mark.django_db
def test_weighted_round_robin_splits_by_weight():
    a, b = ProviderFactory(name="a"), ProviderFactory(name="b")
    pool = services.provider_create(
        name="pool", kind="pool", policy="weighted_round_robin", members=[(a, 3), (b, 1)]
    )
    picks = _picks(pool, 40)
    assert (picks.count("a"), picks.count("b")) == (30, 10)


@pytest.mark.django_db
def test_power_of_two_choices_never_picks_the_busiest_of_three():
    members = [ProviderFactory(name=name) for name in "abc"]
    pool = services.provider_create(
        name="pool",
        kind="pool",
        policy="power_of_two_choices",
        members=[(m, 1) for m in members],
    )
    # Two calls in progress on a, made through another pool: a member's calls count whichever
    # pool made them.
    other = services.provider_create(name="other", kind="pool", members=[(members[0], 1)])
    for _ in range(2):
        assert pool_select_member(pool=other).member == members[0]
    picks = _picks(pool, 30, rng=random.Random(7))
    assert "a" not in picks
    assert {"b", "c"} == set(picks)


@pytest.mark.django_db(transaction=True)
def test_outstanding_calls_are_counted_across_processes_until_their_lease_expires(
    python, repo_root, subprocess_env, settings
):
    a, b = ProviderFactory(name="a"), ProviderFactory(name="b")
    pool = services.provider_create(name="pool", kind="pool", members=[(a, 1), (b, 1)])
    child = subprocess.Popen(
        [python, "-m", "tests.providers.pool_worker", "pool"],
        cwd=repo_root,
        env=subprocess_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        held_by_child = child.stdout.readline().strip()
        assert held_by_child in ("a", "b")
        # Every pick of this process goes to the other member while the child's call runs.
        others = _picks(pool, 4)
        assert set(others) == {"a", "b"} - {held_by_child}
    finally:
        child.kill()
        child.wait()
    # Killed mid-call: its lease still counts, until it expires; the next pick then drops it.
    assert (
        pool_outstanding(members=[a, b], now=timezone.now())[a.pk if held_by_child == "a" else b.pk]
        == 1
    )
    later = timezone.now() + timedelta(seconds=settings.PROVIDERS_POOL_LEASE_S + 1)
    assert pool_outstanding(members=[a, b], now=later) == {a.pk: 0, b.pk: 0}
    _picks(pool, 1, now=lambda: later)
    assert not ProviderLease.objects.exists()


# Breakers and fallbacks ----------------------------------------------------------------------


@pytest.mark.django_db
def test_an_open_member_gets_no_traffic_until_its_trial_succeeds(replicas, run_one, clock):
    sick, healthy = replicas(2)
    pool, (sick_member, healthy_member) = pool_of(
        [sick, healthy],
        breaker={
            "sliding_window_size": 2,
            "minimum_calls": 1,
            "open_duration_s": 30,
            "half_open_permitted_calls": 1,
        },
    )
    sick.server.mode = "server_error"
    first = run_one("replicas")
    # The sick member failed (its breaker opened) and the pool moved on to the healthy one.
    assert first.status == "succeeded"
    assert first.provider == healthy_member
    attempts = list(first.provider_attempts.order_by("position"))
    assert [(a.provider, a.pool, a.outcome) for a in attempts] == [
        (sick_member, pool, "failed"),
        (healthy_member, pool, "succeeded"),
    ]
    assert breakers.breaker_get_or_create(provider=sick_member).state == "open"
    sick_requests = len(sick.server.requests)
    sick.server.mode = "ok"
    for _ in range(5):
        assert run_one("replicas").provider == healthy_member
    assert len(sick.server.requests) == sick_requests
    # Once the open period is over, one trial reaches it; it succeeds and closes the breaker.
    clock.advance(31)
    served = [run_one("replicas").provider for _ in range(4)]
    assert sick_member in served
    assert len(sick.server.requests) > sick_requests
    breaker = breakers.breaker_get_or_create(provider=sick_member)
    assert breaker.state == "closed"
    trial = ExecutionAttempt.objects.filter(provider=sick_member, outcome="succeeded").earliest(
        "id"
    )
    assert trial.breaker_state == "half_open"


@pytest.mark.django_db
def test_when_every_member_is_open_the_pools_fallbacks_answer(replicas, run_one, clock):
    servers = replicas(2)
    echo = ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    pool, members = pool_of(servers, fallbacks=(echo,))
    for member in members:
        breakers.breaker_force_open(provider=member, now=clock)
    execution = run_one("replicas")
    assert (execution.status, execution.provider) == ("succeeded", echo)
    attempts = list(execution.provider_attempts.order_by("position"))
    assert [(a.provider, a.pool, a.outcome, a.cause) for a in attempts] == [
        (pool, pool, "rejected", "breaker_open"),
        (echo, None, "succeeded", ""),
    ]
    assert [len(server.server.requests) for server in servers] == [0, 0]


@pytest.mark.django_db
def test_members_that_all_fail_move_the_execution_to_the_pools_fallbacks(replicas, run_one):
    servers = replicas(2, mode="server_error")
    echo = ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    pool, members = pool_of(servers, fallbacks=(echo,))
    execution = run_one("replicas")
    assert (execution.status, execution.provider) == ("succeeded", echo)
    attempts = list(execution.provider_attempts.order_by("position"))
    assert [(a.pool, a.outcome) for a in attempts] == [
        (pool, "failed"),
        (pool, "failed"),
        (None, "succeeded"),
    ]
    assert {a.provider for a in attempts[:2]} == set(members)
    assert [len(server.server.requests) for server in servers] == [1, 1]


# Monitoring --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_and_the_admin_show_each_member(replicas, run_one, client, admin_client):
    servers = replicas(2)
    pool, members = pool_of(servers)
    before = scrape_client(client)
    for _ in range(4):
        assert run_one("replicas").status == "succeeded"
    held = pool_select_member(pool=pool)
    after = scrape_client(client)
    attempts = "dspy_toolkit_provider_attempts_total"
    for member in members:
        labels = {
            "signature": "qa",
            "version": "1",
            "provider": member.name,
            "pool": "replicas",
            "outcome": "succeeded",
            "error_code": "",
        }
        assert after.value(attempts, **labels) - before.value(attempts, **labels) == 2
        outstanding = 1 if member == held.member else 0
        assert (
            after.value(
                "dspy_toolkit_pool_member_outstanding", pool="replicas", provider=member.name
            )
            == outstanding
        )
    page = admin_client.get(f"/admin/providers/provider/{pool.pk}/change/").content.decode()
    for member in members:
        assert member.name in page
    assert "in progress" in page and "Least outstanding requests" in page
    listing = admin_client.get("/admin/providers/provider/").content.decode()
    assert "2 of 2 members take calls" in listing


def _pool_form(pool: Provider, members: list[tuple[Provider, int]]) -> dict:
    data = {
        "name": pool.name,
        "kind": "pool",
        "model": "",
        "enabled": "on",
        "adapter": "auto",
        "policy": "weighted_round_robin",
        "max_tokens": "32",
        "temperature": "0",
        "top_p": "1",
        "timeout_s": "60",
        "base_url": "",
        "api_key_env": "",
        "engine_path": "",
        "serving_cluster": "",
        "fallback_links-TOTAL_FORMS": "0",
        "fallback_links-INITIAL_FORMS": "0",
        "pool_members-TOTAL_FORMS": str(len(members)),
        "pool_members-INITIAL_FORMS": "0",
    }
    for index, (member, weight) in enumerate(members):
        data[f"pool_members-{index}-member"] = str(member.pk)
        data[f"pool_members-{index}-weight"] = str(weight)
        data[f"pool_members-{index}-position"] = str(index)
    return data


@pytest.mark.django_db
def test_the_admin_edits_a_pools_policy_and_members(admin_client):
    a, b = ProviderFactory(name="a"), ProviderFactory(name="b")
    pool = services.provider_create(name="pool", kind="pool")
    url = f"/admin/providers/provider/{pool.pk}/change/"
    response = admin_client.post(url, _pool_form(pool, [(b, 2), (a, 1)]))
    assert response.status_code == 302, response.context["errors"]
    pool.refresh_from_db()
    assert pool.policy == "weighted_round_robin"
    links = [(link.member, link.weight) for link in pool.pool_members.order_by("position")]
    assert links == [(b, 2), (a, 1)]
    inner = services.provider_create(name="inner", kind="pool")
    refused = admin_client.post(url, _pool_form(pool, [(inner, 1)]))
    assert refused.status_code == 200
    assert "a pool&#x27;s members are not pools" in refused.content.decode()
    assert [link.member for link in pool.pool_members.order_by("position")] == [b, a]
    # The page of any other provider has no pool section.
    assert (
        "pool_members-TOTAL_FORMS"
        not in admin_client.get(f"/admin/providers/provider/{a.pk}/change/").content.decode()
    )


# Load over three real replicas --------------------------------------------------------------

LOAD_BREAKER = {
    "sliding_window_size": 10,
    "minimum_calls": 4,
    "failure_rate_threshold": 50,
    "slow_call_duration_s": 0.25,
    "slow_call_rate_threshold": 50,
    "open_duration_s": 2.0,
    "half_open_permitted_calls": 1,
}


def _load_test(replicas, *, even: int, faulty: int, healed: int, threads: int) -> dict:
    """Three replicas: an even load; then one killed and one made slow a quarter of the way
    into a second load; then both healed. Returns the figures (printed for the closing note)."""
    servers = replicas(3)
    _, members = pool_of(servers, breaker=LOAD_BREAKER)
    names = [member.name for member in members]
    figures: dict = {}

    # Even load: the split across three healthy members.
    load = run_load(provider="replicas", count=even, threads=threads)
    assert not load.errors and load.by_status == {"succeeded": even}
    split = [server.requests for server in servers]
    figures["even_split"] = dict(zip(names, split, strict=True))
    figures["even_max_deviation_pct"] = max(abs(n - even / 3) / (even / 3) * 100 for n in split)

    # Faults: replica 2 killed and replica 1 slow, mid-load.
    dead, slow = servers[2], servers[1]
    before = [server.requests for server in servers]
    fault_at: dict[str, float] = {}

    def faults(done: int) -> None:
        if done == faulty // 4 and not fault_at:
            fault_at["at"] = time.monotonic()
            fault_at["time"] = timezone.now()
            dead.kill()
            slow.server.mode, slow.server.delay_s = "slow", 0.4

    load = run_load(provider="replicas", count=faulty, threads=threads, after_each=faults)
    assert not load.errors
    # No request lost: every execution answered, the failed member calls moved to another.
    assert load.by_status == {"succeeded": faulty}
    after = [server.requests for server in servers]
    dead_member, slow_member = members[2], members[1]
    opened = {
        member.name: BreakerEvent.objects.filter(
            breaker__provider=member, to_state="open", at__gte=fault_at["time"]
        )
        .order_by("at")
        .first()
        for member in (dead_member, slow_member)
    }
    for member in (dead_member, slow_member):
        assert opened[member.name] is not None, f"{member.name}'s breaker never opened"
        # After its breaker opened, a member only got the half-open trials (one per open
        # period), never ordinary traffic.
        later = ExecutionAttempt.objects.filter(
            provider=member, started_at__gt=opened[member.name].at
        )
        assert set(later.values_list("breaker_state", flat=True)) <= {"half_open"}
    dead_failed = ExecutionAttempt.objects.filter(
        provider=dead_member, started_at__gte=fault_at["time"], outcome="failed"
    )
    figures["after_faults"] = {
        "executions": faulty,
        "succeeded": load.by_status["succeeded"],
        "requests": dict(
            zip(names, [a - b for a, b in zip(after, before, strict=True)], strict=True)
        ),
        "dead_member_failed_calls": dead_failed.count(),
        "dead_member_open_after_s": round(
            (opened[dead_member.name].at - fault_at["time"]).total_seconds(), 3
        ),
        "slow_member_open_after_s": round(
            (opened[slow_member.name].at - fault_at["time"]).total_seconds(), 3
        ),
    }
    # Within the breaker's window: a member stops getting ordinary traffic once the failed (or
    # slow) calls reach the threshold's share of the window, give or take the calls already
    # admitted by the other threads.
    window_share = LOAD_BREAKER["sliding_window_size"] * LOAD_BREAKER["failure_rate_threshold"]
    bound = window_share / 100 + threads
    for member in (dead_member, slow_member):
        closed_calls = ExecutionAttempt.objects.filter(
            provider=member, started_at__gte=fault_at["time"], breaker_state="closed"
        ).count()
        figures["after_faults"][f"{member.name}_calls_before_open"] = closed_calls
        assert closed_calls <= bound

    # Recovery: the killed replica restarts, the slow one heals; their trials close them.
    dead.restart()
    slow.server.mode = "ok"
    healed_at = time.monotonic()

    def closed() -> bool:
        return all(
            breakers.breaker_get_or_create(provider=member).state == "closed"
            for member in (dead_member, slow_member)
        )

    recovery_load = run_load(provider="replicas", count=0, threads=1)
    while not closed():
        run_load(provider="replicas", count=threads, threads=threads, load=recovery_load)
        assert time.monotonic() - healed_at < 30, "the members did not recover within 30 s"
    figures["recovered_after_s"] = round(time.monotonic() - healed_at, 3)
    assert not recovery_load.errors
    assert set(recovery_load.by_status) <= {"succeeded"}
    before = [server.requests for server in servers]
    load = run_load(provider="replicas", count=healed, threads=threads)
    assert load.by_status == {"succeeded": healed}
    figures["split_after_recovery"] = dict(
        zip(
            names,
            [server.requests - b for server, b in zip(servers, before, strict=True)],
            strict=True,
        )
    )
    return figures


@pytest.mark.django_db(transaction=True)
def test_traffic_leaves_a_killed_and_a_slow_replica_and_returns_when_they_heal(
    qa_version, replicas
):
    figures = _load_test(replicas, even=90, faulty=48, healed=30, threads=6)
    print(f"\npool load figures: {figures}")
    assert figures["even_max_deviation_pct"] <= 10


@pytest.mark.soak
@pytest.mark.django_db(transaction=True)
def test_soak_traffic_leaves_a_killed_and_a_slow_replica(qa_version, replicas):
    figures = _load_test(replicas, even=900, faulty=900, healed=900, threads=8)
    print(f"\npool load figures (soak): {figures}")
    assert figures["even_max_deviation_pct"] <= 10
    split = figures["split_after_recovery"].values()
    assert max(split) - min(split) <= 0.2 * 900 / 3
