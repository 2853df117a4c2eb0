"""django-q2's task pages say that a task's status is the delivery's, and show each
execution's own status next to its task."""

import uuid

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django_q.models import Success, Task
from django_q.tasks import async_task

from executions.models import Execution
from executions.services.cancel import execution_cancel
from executions.services.create import execution_create
from monitoring.q2_admin import DELIVERY_NOTE
from tests.support.engines import BROKEN_ENGINE, ECHO_ENGINE
from tests.support.factories import ProviderFactory, SignatureVersionFactory

NOTE = escape(DELIVERY_NOTE)

pytestmark = pytest.mark.django_db

SUCCESSES = "admin:django_q_success_changelist"
FAILURES = "admin:django_q_failure_changelist"


@pytest.fixture
def executions(django_capture_on_commit_callbacks) -> dict[str, Execution]:
    """A succeeded, a failed and a cancelled execution, each delivered by a task that ran fine."""
    SignatureVersionFactory(signature__name="qa")
    ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    ProviderFactory(name="broken", engine_path=BROKEN_ENGINE)
    made = {}
    for name in ("echo", "broken"):
        with django_capture_on_commit_callbacks(execute=True):
            made[name] = execution_create(
                signature="qa", inputs={"question": "q"}, provider=name
            ).execution
    with django_capture_on_commit_callbacks() as enqueues:
        made["cancelled"] = execution_create(
            signature="qa", inputs={"question": "q"}, provider="echo"
        ).execution
    execution_cancel(execution=made["cancelled"])
    # Its task is delivered after the cancel, finds nothing to claim, and returns.
    for enqueue in enqueues:
        enqueue()
    for execution in made.values():
        execution.refresh_from_db()
    return made


def test_the_successful_tasks_page_shows_each_execution_status(
    admin_client, executions, django_assert_max_num_queries
):
    assert Success.objects.count() == 3
    url = reverse(SUCCESSES)
    admin_client.get(url)
    with django_assert_max_num_queries(12) as counted:
        page = admin_client.get(url).content.decode()
    assert "Delivered tasks (the task function returned)" in page
    assert NOTE in page
    for execution in executions.values():
        link = reverse("admin:executions_execution_change", args=[execution.pk])
        assert f'href="{link}" class="execution-status execution-status-{execution.status}"' in page
    assert (executions["broken"].status, executions["cancelled"].status) == ("failed", "cancelled")
    assert f">Failed</a> ({executions['broken'].error_code})" in page
    assert ">Cancelled</a>" in page
    # One query for the executions of the whole page, however many tasks it lists.
    for _ in range(3):
        async_task("executions.tasks.execution_run", str(executions["echo"].pk))
    with django_assert_max_num_queries(len(counted.captured_queries)):
        admin_client.get(url)


def test_a_task_page_shows_its_execution(admin_client, executions):
    task = Success.objects.get(args=(str(executions["broken"].pk),))
    page = admin_client.get(reverse("admin:django_q_success_change", args=[task.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert NOTE in text
    assert "execution-status-failed" in text


def test_failed_tasks_show_executions_that_finished_all_the_same(admin_client, executions):
    # A delivery that raised (say its connection was lost for good) while the execution was
    # finished by another delivery; and a failed task of another function.
    now = timezone.now()
    for name, func, args in (
        ("raised", "executions.tasks.execution_run", (str(executions["echo"].pk),)),
        ("other", "math.floor", ("x",)),
    ):
        Task.objects.create(
            id=uuid.uuid4().hex,
            name=name,
            func=func,
            args=args,
            kwargs={},
            started=now,
            stopped=now,
            success=False,
            result="OperationalError: connection lost",
        )
    page = admin_client.get(reverse(FAILURES)).content.decode()
    assert "Failed tasks (the task function raised)" in page
    assert NOTE in page
    assert "execution-status-succeeded" in page
    assert page.count("execution-status-") == 1
