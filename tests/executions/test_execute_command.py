"""`executions_execute`: a signature run from the terminal through the executions services.

The test settings run django-q2 tasks inline when the execution's row is committed, so with a
transactional database the sync run has finished before the command starts waiting.
"""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from executions.models import Execution


def _call(*args) -> str:
    out = StringIO()
    call_command("executions_execute", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_sync_prints_outputs_and_metrics(qa_version, echo_provider):
    output = _call("qa", "--provider", "echo", "--input", "question=3", "--input", "level=2")
    assert 'answer: "Paris"' in output
    assert "status:    succeeded" in output
    assert "provider:  echo (requested echo)" in output
    assert "tokens:    7 in, 1 out" in output
    # Each value as its field's type: text stays text, the int field reads JSON.
    assert Execution.objects.get().inputs == {"question": "3", "level": 2}


@pytest.mark.django_db(transaction=True)
def test_inputs_from_a_file_with_json_output(qa_version, echo_provider, tmp_path):
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"question": "What is the capital of France?", "level": 1}))
    output = _call(
        "qa", "--version", "1", "--inputs-file", str(inputs), "--input", "level=5", "--json"
    )
    body = json.loads(output)
    assert (body["status"], body["outputs"], body["version"]) == (
        "succeeded",
        {"answer": "Paris"},
        1,
    )
    assert body["inputs"] == {"question": "What is the capital of France?", "level": 5}
    assert body["metrics"]["input_tokens"] == 7


@pytest.mark.django_db
def test_async_prints_the_id_and_returns(qa_version, echo_provider):
    # Nothing is committed in this test, so the task is never enqueued: it stays queued.
    output = _call(
        "qa", "--provider", "echo", "--async", "--input", "question=q", "--input", "level=1"
    )
    execution = Execution.objects.get()
    assert f"execution: {execution.id}" in output
    assert "status:    queued" in output
    assert f"/api/v1/executions/{execution.id}" in output
    assert execution.mode == "async"


@pytest.mark.django_db(transaction=True)
def test_a_failed_execution_exits_non_zero(qa_version, broken_provider):
    out = StringIO()
    with pytest.raises(CommandError, match="ended failed"):
        call_command(
            "executions_execute",
            "qa",
            "--provider",
            "broken",
            "--input",
            "question=q",
            "--input",
            "level=1",
            stdout=out,
        )
    assert "status:    failed" in out.getvalue()
    assert "error:" in out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nope", "--input", "question=q"], "signature_not_found"),
        (["qa", "--alias", "staging", "--input", "question=q"], "alias_not_found"),
        (["qa", "--provider", "nope", "--input", "question=q", "--input", "level=1"], "nope"),
        (["qa", "--input", "question=q", "--input", "level=high"], "level: Expected an integer"),
        (["qa", "--input", "question=q"], "level: The input 'level' is required"),
        (["qa", "--input", "question"], "NAME=VALUE"),
        (["qa", "--timeout", "0"], "positive number of seconds"),
        (["qa", "--timeout", "100000"], "at most"),
        (["qa", "--version", "1", "--alias", "production"], "not allowed with"),
    ],
)
def test_bad_arguments_are_clear_command_errors(qa_version, echo_provider, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("executions_execute", *arguments, stdout=StringIO())
    assert not Execution.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("content", "message"), [("{not json", "is not JSON"), ("[1]", "object")])
def test_a_bad_inputs_file_is_a_command_error(
    qa_version, echo_provider, tmp_path, content, message
):
    path = tmp_path / "inputs.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("executions_execute", "qa", "--inputs-file", str(path), stdout=StringIO())
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("executions_execute", "qa", "--inputs-file", str(tmp_path / "missing.json"))


@pytest.mark.qcluster
@pytest.mark.django_db(transaction=True)
def test_sync_waits_for_a_real_cluster(qa_version, echo_provider, start_cluster):
    start_cluster()
    output = _call(
        "qa",
        "--input",
        "question=q",
        "--input",
        "level=1",
        "--provider",
        "echo",
        "--timeout",
        "120",
    )
    assert 'answer: "Paris"' in output
    # The command waited for another process to run it.
    assert Execution.objects.get().status == "succeeded"
