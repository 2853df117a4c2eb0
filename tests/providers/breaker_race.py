"""Child process of the half-open race test: ask the breaker for a permit once, at a signal.

Usage: python -m tests.providers.breaker_race <provider name> <now, ISO 8601> <go file>
Prints `ready` once connected to the database, then `admitted` or `refused`.
"""

import sys
import time
from datetime import datetime
from pathlib import Path

import django


def main() -> None:
    django.setup()
    from django.db import connection

    from providers.breakers import breaker_acquire_permission
    from providers.models import Provider

    name, moment, go_file = sys.argv[1], datetime.fromisoformat(sys.argv[2]), Path(sys.argv[3])
    provider = Provider.objects.get(name=name)
    connection.ensure_connection()
    print("ready", flush=True)
    while not go_file.exists():
        time.sleep(0.001)
    admitted = breaker_acquire_permission(provider=provider, now=lambda: moment)
    print("admitted" if admitted else "refused", flush=True)


if __name__ == "__main__":
    main()
