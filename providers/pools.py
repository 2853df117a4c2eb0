"""Pools: picking the member of a pool that serves a call, and counting the calls in progress.

A pool (a provider of kind `pool`) serves each call with one of its members, each an ordinary
provider with its own circuit breaker. `pool_select_member` leaves out the members that are
disabled, excluded by the caller (they already failed this request) or open, picks one of the
rest by the pool's policy and asks its breaker: a permission is only ever taken on the member
that will be called (half-open, that is a trial permit, which the call reports as any other).

Outstanding requests are `ProviderLease` rows: one taken with the permission and deleted by
`pool_release` when the call ends, so every web and worker process counts every other's calls.
A pick reads the counts and takes its lease under the pool's cursor row lock (one upsert that
also advances the round robin's sequence), so two processes picking at once see each other's
lease and do not both pile onto the least loaded member; its breaker is asked after that. A
process killed mid-call leaves its lease behind: it stops counting at its `expires_at`
(`PROVIDERS_POOL_LEASE_S`), and the next pick of the pool deletes it.

The policies, over the eligible members:
- `least_outstanding`: the fewest leases per unit of weight; ties go round the members in turn
  (the shared sequence), so an even load splits evenly rather than by chance.
- `weighted_round_robin`: the shared sequence modulo the total weight, each member owning as
  many consecutive slots as its weight.
- `power_of_two_choices`: two members at random, the one with fewer leases per unit of weight.
When the picked member's breaker refuses (its trial permits are taken), the pick is made again
without it.
"""

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from core.db import db_retry, db_retrying
from providers.breakers import breaker_admit_call
from providers.models import CircuitBreaker, PoolCursor, Provider, ProviderLease, ProviderPoolMember
from providers.selectors import provider_breaker_statuses, provider_pool_members

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class PoolLease:
    """A call admitted on `member` of `pool`, counted until `pool_release` (see the module)."""

    pool: Provider
    member: Provider
    lease_id: int
    # The member's breaker state that admitted the call (see `breaker_admit_call`); "" while
    # the lease is taken but not yet admitted.
    breaker_state: str = ""


def pool_outstanding(*, members: Collection[Provider], now: datetime) -> dict[int, int]:
    """The calls in progress on each member, by provider id, over every process (live leases)."""
    counts = dict.fromkeys((member.pk for member in members), 0)
    rows = (
        ProviderLease.objects.filter(member__in=list(members), expires_at__gt=now)
        .values("member_id")
        .annotate(calls=Count("pk"))
        .values_list("member_id", "calls")
    )
    counts.update(rows)
    return counts


def _advance_cursor(pool: Provider) -> int:
    """The pool's next sequence number (0 for its first pick), holding its cursor row until
    commit: the lock that serialises the pool's picks."""
    table = PoolCursor._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (pool_id, sequence) VALUES (%s, 0) "  # noqa: S608
            f"ON CONFLICT (pool_id) DO UPDATE SET sequence = {table}.sequence + 1 "
            f"RETURNING sequence",
            [pool.pk],
        )
        return cursor.fetchone()[0]


def _pick(
    *,
    policy: str,
    links: list[ProviderPoolMember],
    counts: dict[int, int],
    sequence: int,
    rng: random.Random,
) -> ProviderPoolMember:
    """The eligible member the policy picks (see the module)."""
    size = len(links)

    def load(index: int) -> float:
        return counts[links[index].member_id] / links[index].weight

    if policy == Provider.Policy.WEIGHTED_ROUND_ROBIN:
        slot = sequence % sum(link.weight for link in links)
        for link in links:
            if slot < link.weight:
                return link
            slot -= link.weight
    if policy == Provider.Policy.POWER_OF_TWO_CHOICES and size > 2:
        return links[min(rng.sample(range(size), 2), key=load)]
    # Least outstanding; on a tie, the member whose turn it is, then round the list from it.
    return links[min(range(size), key=lambda index: (load(index), (index - sequence) % size))]


@db_retrying()
@transaction.atomic
def _take_lease(
    *, pool: Provider, links: list[ProviderPoolMember], now: datetime, rng: random.Random
) -> PoolLease:
    """A lease on the member the policy picks, counted and taken under the pool's lock."""
    sequence = _advance_cursor(pool)
    # The leases of killed processes, once they stop counting.
    ProviderLease.objects.filter(pool=pool, expires_at__lte=now).delete()
    counts = pool_outstanding(members=[link.member for link in links], now=now)
    link = _pick(policy=pool.policy, links=links, counts=counts, sequence=sequence, rng=rng)
    lease = ProviderLease.objects.create(
        member=link.member,
        pool=pool,
        taken_at=now,
        expires_at=now + timedelta(seconds=settings.PROVIDERS_POOL_LEASE_S),
    )
    return PoolLease(pool=pool, member=link.member, lease_id=lease.pk)


def pool_select_member(
    *,
    pool: Provider,
    now: Clock = timezone.now,
    exclude: Collection[int] = (),
    rng: random.Random | None = None,
) -> PoolLease | None:
    """Pick the member that serves the pool's next call and admit the call on it (a lease, and
    its breaker's permission); None when no member can take it: every eligible member's breaker
    is open (or all are disabled or in `exclude`, provider ids). The caller must report the
    call to the member's breaker and end the lease with `pool_release`.

    The breaker is asked after the pool's lock is let go, never under it: a lock on a breaker
    taken under a pool's lock could deadlock with a pick of another pool sharing members. A
    member whose breaker refuses (its trial permits are taken) has its lease ended and the
    next pick leaves it out."""
    moment = now()
    rng = rng or random.Random()
    links = [
        link
        for link in db_retry(lambda: provider_pool_members(pool=pool))
        if link.member.enabled and link.member_id not in exclude
    ]
    statuses = db_retry(
        lambda: provider_breaker_statuses(providers=[link.member for link in links], now=moment)
    )
    # An open member is not asked: it would refuse.
    links = [
        link
        for link in links
        if statuses[link.member_id].effective_state != CircuitBreaker.State.OPEN
    ]
    while links:
        lease = _take_lease(pool=pool, links=links, now=moment, rng=rng)
        admitted_as = breaker_admit_call(provider=lease.member, now=lambda: moment)
        if admitted_as is not None:
            return replace(lease, breaker_state=admitted_as)
        pool_release(lease=lease)
        links = [link for link in links if link.member_id != lease.member.pk]
    return None


def pool_release(*, lease: PoolLease) -> None:
    """End the lease of a call that finished (succeeded, failed or raised)."""
    db_retry(lambda: ProviderLease.objects.filter(pk=lease.lease_id).delete())
