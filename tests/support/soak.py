"""The `soak` marker: the long versions of the fault, overload and fuzz tests. They run with
`SOAK=1` (`make soak`, bounded in time) and are skipped otherwise, so the normal suite stays
quick."""

import os

import pytest


def soak_enabled() -> bool:
    return os.environ.get("SOAK") == "1"


def pytest_collection_modifyitems(config, items):
    if soak_enabled():
        return
    skip = pytest.mark.skip(reason="a soak test: set SOAK=1 to run it (make soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
