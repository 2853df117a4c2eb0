"""The registry on the embedded SQLite database (the quick start's default), end to end.

Runs the commands in a child process with the local settings and no DATABASE_URL, the way a
new user's first run does.
"""

import json
import subprocess

SCRIPT = """
import json
from registry.selectors import signature_list, signature_version_resolve
from registry.services.aliases import alias_set
from registry.services.versions import signature_version_create
from registry.models import Signature

qa = Signature.objects.get(name="qa")
spec = dict(signature_version_resolve(name="qa").behaviour(), instructions="Second.")
second = signature_version_create(signature=qa, spec=spec).version
alias_set(signature=qa, name="staging", version=second)
print(json.dumps({
    "tagged": [s.name for s in signature_list(tag="rag")],
    "searched": [s.name for s in signature_list(search="sentiment")],
    "by_kind": sorted(s.name for s in signature_list(module_kind="ChainOfThought")),
    "production": signature_version_resolve(name="qa").number,
    "staging": signature_version_resolve(name="qa", ref="staging").number,
}))
"""


def _manage(python, repo_root, env, *args) -> str:
    result = subprocess.run(
        [python, "manage.py", *args],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_registry_works_on_sqlite(python, repo_root, sqlite_env, tmp_path):
    _manage(python, repo_root, sqlite_env, "migrate", "--verbosity", "0")
    # The shipped library: the plain template, its optimized version in production, and
    # its starter dataset.
    assert "created     qa (version 1, optimized version 2, production → v2; dataset starter" in (
        _manage(python, repo_root, sqlite_env, "registry_load_library")
    )
    assert "unchanged   qa (matches version 1)" in _manage(
        python, repo_root, sqlite_env, "registry_load_library"
    )
    output = _manage(python, repo_root, sqlite_env, "shell", "--verbosity", "0", "-c", SCRIPT)
    result = json.loads(output.strip().splitlines()[-1])
    assert result == {
        "tagged": ["qa_with_context"],
        "searched": ["sentiment"],
        "by_kind": ["math_word_problem", "verify_claim"],
        "production": 2,
        "staging": 3,
    }
    export = tmp_path / "export.json"
    _manage(python, repo_root, sqlite_env, "registry_export", "--output", str(export))
    fresh = sqlite_env | {"DSPY_TOOLKIT_VAR_DIR": str(tmp_path / "fresh")}
    _manage(python, repo_root, fresh, "migrate", "--verbosity", "0")
    _manage(python, repo_root, fresh, "registry_import", str(export))
    again = tmp_path / "again.json"
    _manage(python, repo_root, fresh, "registry_export", "--output", str(again))
    assert json.loads(again.read_text()) == json.loads(export.read_text())
