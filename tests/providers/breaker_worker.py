"""Child process of the breaker guarantee tests.

Usage: python -m tests.providers.breaker_worker <provider name> <go file> <action> [count]
Prints `ready` once connected to the database, waits for the go file, then runs the action:
`fail N` records N failures; `hold` takes a half-open trial permit and is killed holding it;
`ask` asks for permission once and prints `admitted` or `refused`.
"""

import sys
import time
from pathlib import Path

import django


def main() -> None:
    django.setup()
    from django.db import connection

    from providers import breakers
    from providers.models import Provider

    name, go_file, action = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    provider = Provider.objects.get(name=name)
    connection.ensure_connection()
    print("ready", flush=True)
    while not go_file.exists():
        time.sleep(0.001)
    if action == "fail":
        for _ in range(int(sys.argv[4])):
            breakers.breaker_record_failure(provider=provider, duration_s=0.01)
        print("done", flush=True)
    elif action == "hold":
        admitted = breakers.breaker_acquire_permission(provider=provider)
        print("holding" if admitted else "refused", flush=True)
        time.sleep(600)  # killed by the test while it holds the permit
    else:
        admitted = breakers.breaker_acquire_permission(provider=provider)
        print("admitted" if admitted else "refused", flush=True)


if __name__ == "__main__":
    main()
