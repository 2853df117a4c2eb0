"""The README's table of error codes lists every code the services can raise, with its status."""

import re

import executions.exceptions
import providers.exceptions
import registry.exceptions  # noqa: F401  (the error classes register as subclasses on import)
from core.errors import ApplicationError


def _leaf_errors(cls: type) -> set[type]:
    children = cls.__subclasses__()
    if not children:
        return {cls}
    return set().union(*(_leaf_errors(child) for child in children))


def _readme_codes(repo_root) -> dict[str, int]:
    text = (repo_root / "README.md").read_text()
    table = text.split("### Errors", 1)[1].split("###", 1)[0]
    codes = {}
    for status, cells in re.findall(r"^\| (\d{3}) \| (.+) \|$", table, flags=re.MULTILINE):
        for code in re.findall(r"`([a-z_]+)`", cells):
            codes[code] = int(status)
    return codes


def test_every_service_error_is_in_the_readme_with_its_status(repo_root):
    documented = _readme_codes(repo_root)
    assert executions.exceptions.InvalidConfig in _leaf_errors(ApplicationError)
    for error in _leaf_errors(ApplicationError):
        assert documented.get(error.code) == error.status_code, error
    assert providers.exceptions.ProviderInUse.code in documented
