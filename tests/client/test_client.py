"""The Python client against a live server: predictions, the API's errors as exceptions,
retries with one Idempotency-Key through a proxy that drops answers, polling, timeouts, batches,
and the same through the async client."""

import asyncio
import subprocess

import dspy
import httpx
import pytest

from dspy_toolkit_client import (
    AsyncToolkit,
    AuthenticationError,
    ConnectionFailed,
    ExecutionFailed,
    ExecutionTimeout,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    Toolkit,
    ToolkitPrediction,
)
from executions.models import Execution
from tests.support.engines import INPUT_TOKENS

QUESTION = "What is the capital of France?"


def test_a_call_returns_a_prediction_with_the_execution_beside_the_outputs(server_url, raw_key):
    with Toolkit(server_url, raw_key) as toolkit:
        qa = toolkit.signature("qa", version="production", provider="echo")
        prediction = qa(question=QUESTION)

    execution = Execution.objects.get()
    assert isinstance(prediction, dspy.Prediction)
    assert isinstance(prediction, ToolkitPrediction)
    assert prediction.answer == "Paris"
    assert prediction.keys() == ["answer"]
    assert prediction.execution_id == str(execution.id)
    assert (prediction.provider, prediction.version) == ("echo", 1)
    assert prediction.metrics["input_tokens"] == INPUT_TOKENS
    assert prediction.metrics["success"] is True
    assert prediction.get_lm_usage() == {
        "echo": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": 1, "total_tokens": 8}
    }
    assert execution.inputs == {"question": QUESTION}


def test_an_unknown_signature_raises_not_found_with_the_apis_code(server_url, raw_key):
    with Toolkit(server_url, raw_key) as toolkit, pytest.raises(NotFoundError) as raised:
        toolkit.signature("qa_v2", provider="echo")(question=QUESTION)
    assert (raised.value.code, raised.value.status) == ("signature_not_found", 404)
    assert "qa_v2" in raised.value.message


def test_inputs_that_do_not_fit_raise_invalid_inputs_with_the_field_errors(server_url, raw_key):
    with Toolkit(server_url, raw_key) as toolkit, pytest.raises(InvalidRequestError) as raised:
        toolkit.signature("qa", provider="echo")(question=5)
    assert (raised.value.code, raised.value.status) == ("invalid_inputs", 400)
    assert raised.value.errors["question"][0]["code"] == "wrong_type"
    assert not Execution.objects.exists()


def test_a_wrong_api_key_raises_an_authentication_error_without_the_key(server_url, raw_key):
    wrong = raw_key[:-4] + "xxxx"
    with Toolkit(server_url, wrong) as toolkit, pytest.raises(AuthenticationError) as raised:
        toolkit.signature("qa", provider="echo")(question=QUESTION)
    assert (raised.value.code, raised.value.status) == ("authentication_failed", 401)
    assert wrong not in f"{raised.value} {raised.value!r} {toolkit!r}"


def test_a_failed_execution_raises_execution_failed_with_its_code_and_id(server_url, raw_key):
    with Toolkit(server_url, raw_key) as toolkit, pytest.raises(ExecutionFailed) as raised:
        toolkit.signature("qa", provider="broken")(question=QUESTION)
    execution = Execution.objects.get()
    assert execution.status == "failed"
    assert raised.value.execution_id == str(execution.id)
    assert raised.value.code == execution.error_code
    assert raised.value.cause == execution.error_cause


def test_an_answer_lost_on_the_way_is_asked_again_with_the_same_key(start_proxy, raw_key):
    """The proxy forwards the first request, which runs, and drops its answer: the retry
    carries the same Idempotency-Key, so the server answers with that execution."""
    proxy = start_proxy(drops=1)
    with Toolkit(proxy.url, raw_key, backoff_s=0.01) as toolkit:
        prediction = toolkit.signature("qa", provider="echo")(question=QUESTION)

    execution = Execution.objects.get()
    assert prediction.execution_id == str(execution.id)
    assert prediction.answer == "Paris"
    first, second = proxy.requests
    assert (first.method, first.status, second.status) == ("POST", None, 200)
    assert first.idempotency_key == second.idempotency_key
    assert first.idempotency_key


def test_retries_stop_after_max_retries_with_connection_failed(start_proxy, raw_key):
    proxy = start_proxy(drops=10)
    toolkit = Toolkit(proxy.url, raw_key, max_retries=2, backoff_s=0.01)
    with toolkit, pytest.raises(ConnectionFailed) as raised:
        toolkit.signature("qa", provider="echo")(question=QUESTION)
    assert raised.value.code == "connection_failed"
    assert len(proxy.requests) == 3
    assert len({request.idempotency_key for request in proxy.requests}) == 1
    assert Execution.objects.count() == 1


def test_a_server_that_does_not_listen_raises_connection_failed(raw_key):
    toolkit = Toolkit("http://127.0.0.1:9", raw_key, max_retries=1, backoff_s=0.01)
    with toolkit, pytest.raises(ConnectionFailed) as raised:
        toolkit.signature("qa")(question=QUESTION)
    assert isinstance(raised.value.__cause__, httpx.ConnectError)


def test_a_key_given_by_the_caller_replays_the_same_execution(server_url, raw_key):
    with Toolkit(server_url, raw_key) as toolkit:
        qa = toolkit.signature("qa", provider="echo")
        first = qa.call({"question": QUESTION}, idempotency_key="order-17")
        again = qa.call({"question": QUESTION}, idempotency_key="order-17")
    assert first.execution_id == again.execution_id
    assert Execution.objects.count() == 1


def test_an_execution_still_running_after_the_wait_is_polled_until_it_finishes(
    no_workers, run_when_queued, start_proxy, raw_key
):
    run_when_queued(after_s=1.0)
    proxy = start_proxy()
    with Toolkit(proxy.url, raw_key, wait_s=0.1, timeout=10) as toolkit:
        prediction = toolkit.signature("qa", provider="echo")(question=QUESTION)

    assert prediction.answer == "Paris"
    post, *polls = proxy.requests
    assert (post.method, post.status) == ("POST", 202)
    assert polls
    assert {(poll.method, poll.path) for poll in polls} == {
        ("GET", f"/api/v1/executions/{prediction.execution_id}")
    }


def test_a_call_past_its_timeout_raises_with_the_execution_to_wait_for(
    no_workers, run_when_queued, server_url, raw_key
):
    with Toolkit(server_url, raw_key, wait_s=0.1) as toolkit:
        qa = toolkit.signature("qa", provider="echo", timeout=0.5)
        with pytest.raises(ExecutionTimeout) as raised:
            qa(question=QUESTION)
        execution = Execution.objects.get()
        assert (raised.value.code, raised.value.execution_id) == ("timeout", str(execution.id))
        assert execution.status == "queued"

        run_when_queued(after_s=0)
        assert toolkit.wait(raised.value.execution_id, timeout=30).answer == "Paris"


def test_a_retry_after_past_the_timeout_is_not_waited_for(
    no_workers, start_proxy, raw_key, settings
):
    settings.EXECUTIONS_MAX_QUEUED_PER_CLIENT = 1
    proxy = start_proxy()
    with Toolkit(proxy.url, raw_key, wait_s=0.1, timeout=1) as toolkit:
        qa = toolkit.signature("qa", provider="echo")
        with pytest.raises(ExecutionTimeout):
            qa(question=QUESTION)  # stays queued: the client's share is taken
        posts_before = [r for r in proxy.requests if r.method == "POST"]
        with pytest.raises(RateLimitedError) as raised:
            qa(question=QUESTION)
    assert (raised.value.code, raised.value.status) == ("client_queue_full", 429)
    assert raised.value.retry_after == 5
    # Answered at once: the Retry-After (5 s) ends past the call's timeout (1 s).
    assert len([r for r in proxy.requests if r.method == "POST"]) == len(posts_before) + 1


def test_a_full_queue_is_tried_again_after_retry_after_with_the_same_key(
    no_workers, run_when_queued, start_proxy, raw_key, settings
):
    """The client's share of the queue is taken (429 `client_queue_full`, Retry-After 5 s);
    a worker drains it meanwhile, and the retry, with the same key, is accepted."""
    settings.EXECUTIONS_MAX_QUEUED_PER_CLIENT = 1
    proxy = start_proxy()
    with Toolkit(proxy.url, raw_key, wait_s=0.1) as toolkit:
        qa = toolkit.signature("qa", provider="echo")
        with pytest.raises(ExecutionTimeout) as first:
            qa.call({"question": QUESTION}, timeout=0.5)
        run_when_queued(after_s=1.0)
        with pytest.raises(ExecutionTimeout) as second:
            qa.call({"question": "And of Italy?"}, timeout=6.5)

    refused, accepted = [r for r in proxy.requests if r.method == "POST"][1:]
    assert (refused.status, accepted.status) == (429, 202)
    assert refused.idempotency_key == accepted.idempotency_key
    statuses = dict(Execution.objects.values_list("id", "status"))
    assert {str(id): status for id, status in statuses.items()} == {
        first.value.execution_id: "succeeded",
        second.value.execution_id: "queued",
    }


def test_a_batch_answers_in_order_across_requests_with_each_items_error(server_url, raw_key):
    inputs = [{"question": QUESTION}, {"question": 5}, {"question": "And of Italy?"}]
    with Toolkit(server_url, raw_key, batch_size=2) as toolkit:
        qa = toolkit.signature("qa", provider="echo")
        first, refused, third = qa.batch(inputs, return_errors=True)
        with pytest.raises(InvalidRequestError) as raised:
            qa.batch(inputs)

    assert (first.answer, third.answer) == ("Paris", "Paris")
    assert isinstance(refused, InvalidRequestError)
    assert (refused.code, refused.index, refused.status) == ("invalid_inputs", 1, 400)
    assert (raised.value.code, raised.value.index) == ("invalid_inputs", 1)
    batches = set(
        Execution.objects.filter(id__in=[first.execution_id, third.execution_id]).values_list(
            "batch_id", flat=True
        )
    )
    assert len(batches) == 2, "three items of at most two a request make two batches"
    assert toolkit.signature("qa").batch([]) == []


def test_the_async_client_calls_batches_and_raises_the_same(server_url, raw_key):
    async def use() -> tuple:
        async with AsyncToolkit(server_url, raw_key) as toolkit:
            qa = toolkit.signature("qa", version=1, provider="echo")
            prediction = await qa(question=QUESTION)
            via_acall = await qa.acall(question=QUESTION)
            batch = await qa.batch([{"question": QUESTION}, {"question": 5}], return_errors=True)
            try:
                await toolkit.signature("missing")(question=QUESTION)
            except NotFoundError as error:
                missing = error
        return prediction, via_acall, batch, missing

    prediction, via_acall, (answered, refused), missing = asyncio.run(use())
    assert (prediction.answer, via_acall.answer, answered.answer) == ("Paris",) * 3
    assert prediction.execution_id != via_acall.execution_id
    assert (refused.code, refused.index) == ("invalid_inputs", 1)
    assert missing.code == "signature_not_found"
    assert Execution.objects.count() == 3


def test_the_async_client_polls_and_retries_like_the_sync_one(
    no_workers, run_when_queued, start_proxy, raw_key
):
    run_when_queued(after_s=1.0)
    proxy = start_proxy(drops=1)

    async def use():
        options = {"wait_s": 0.1, "backoff_s": 0.01, "timeout": 10}
        async with AsyncToolkit(proxy.url, raw_key, **options) as toolkit:
            return await toolkit.signature("qa", provider="echo")(question=QUESTION)

    prediction = asyncio.run(use())
    assert prediction.answer == "Paris"
    dropped, replayed, *polls = proxy.requests
    assert (dropped.status, replayed.status) == (None, 202)
    assert dropped.idempotency_key == replayed.idempotency_key
    assert polls
    assert Execution.objects.count() == 1


def test_the_client_imports_neither_django_nor_the_projects_apps(python, repo_root):
    script = (
        "import sys, dspy_toolkit_client\n"
        "apps = {'django', 'core', 'registry', 'providers', 'executions', 'monitoring', 'config'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in apps))\n"
    )
    result = subprocess.run(
        [python, "-c", script], cwd=repo_root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.qcluster
def test_calls_and_batches_finish_on_a_real_cluster(start_cluster, server_url, raw_key):
    """Workers of a real django-q2 cluster run what the client's requests queue; the client
    asks the server to wait only briefly and polls what is not done by then."""
    start_cluster()
    questions = [{"question": f"Question {n}?"} for n in range(3)]
    with Toolkit(server_url, raw_key, wait_s=0.1, timeout=120) as toolkit:
        qa = toolkit.signature("qa", provider="echo")
        single = qa(question=QUESTION)
        batch = qa.batch(questions)
    assert [prediction.answer for prediction in (single, *batch)] == ["Paris"] * 4
    assert set(Execution.objects.values_list("status", flat=True)) == {"succeeded"}
    assert Execution.objects.exclude(task_id="").count() == 4
