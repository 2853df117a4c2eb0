"""Child process of the pool tests.

Usage: python -m tests.providers.pool_worker <pool name>
Picks a member of the pool (its breaker's permission and a lease, as a call would), prints the
member's name and holds the lease until it is killed, as a worker dying mid-call would.
"""

import sys
import time

import django


def main() -> None:
    django.setup()
    from providers.models import Provider
    from providers.pools import pool_select_member

    lease = pool_select_member(pool=Provider.objects.get(name=sys.argv[1]))
    print(lease.member.name if lease else "none", flush=True)
    time.sleep(600)  # killed by the test while it holds the lease


if __name__ == "__main__":
    main()
