"""django-q2's task pages, told apart from the executions they carried.

django-q2 files a task under "Successful tasks" when its function returned and under "Failed
tasks" when it raised. An execution's task returns whatever became of the execution (a failed,
timed-out or cancelled execution is a task that ran fine), so those pages say nothing about
executions. The task pages keep django-q2's admin (its resubmit action included) and add: a
heading that says the status is the delivery's, and for each task of an execution the
execution's own status, linked to its page (one query for the whole page).
"""

import uuid

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.urls import reverse
from django.utils.html import format_html
from django_q.admin import FailAdmin, TaskAdmin
from django_q.models import Failure, Success, Task

from executions.models import Execution

EXECUTION_TASK = "executions.tasks.execution_run"
DELIVERY_NOTE = (
    "A task's status is django-q2's delivery status (whether the task function returned), not "
    "the execution's: a failed, timed-out or cancelled execution is a task that ran fine. The "
    "execution column shows the execution's own status."
)


def _execution_id(task: Task) -> uuid.UUID | None:
    if task.func != EXECUTION_TASK or not task.args:
        return None
    try:
        return uuid.UUID(str(task.args[0]))
    except ValueError:
        return None


class ExecutionTaskChangeList(ChangeList):
    def get_results(self, request) -> None:
        super().get_results(request)
        _attach_executions(self.result_list)


def _attach_executions(tasks) -> None:
    """Set `task.execution` (None for other tasks, or an execution since deleted)."""
    ids = {task.pk: _execution_id(task) for task in tasks}
    found = Execution.objects.filter(id__in={i for i in ids.values() if i}).only(
        "id", "status", "error_code"
    )
    executions = {execution.id: execution for execution in found}
    for task in tasks:
        task.execution = executions.get(ids[task.pk])


class ExecutionTaskAdminMixin:
    title: str
    change_list_template = "monitoring/q2_task_change_list.html"
    change_form_template = "monitoring/q2_task_change_form.html"

    def get_changelist(self, request, **kwargs):
        return ExecutionTaskChangeList

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "execution"]

    def get_list_display(self, request):
        return [*super().get_list_display(request), "execution"]

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(
            request, {"title": self.title, "delivery_note": DELIVERY_NOTE, **(extra_context or {})}
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(
            request, object_id, form_url, {"delivery_note": DELIVERY_NOTE, **(extra_context or {})}
        )

    @admin.display(description="execution")
    def execution(self, task: Task) -> str:
        if not hasattr(task, "execution"):
            # The task's own page: one task, one query.
            _attach_executions([task])
        execution = task.execution
        if execution is None:
            return "-" if _execution_id(task) is None else "deleted"
        error = f" ({execution.error_code})" if execution.error_code else ""
        return format_html(
            '<a href="{}" class="execution-status execution-status-{}">{}</a>{}',
            reverse("admin:executions_execution_change", args=[execution.pk]),
            execution.status,
            execution.get_status_display(),
            error,
        )


class DeliveredTaskAdmin(ExecutionTaskAdminMixin, TaskAdmin):
    title = "Delivered tasks (the task function returned)"


class RaisedTaskAdmin(ExecutionTaskAdminMixin, FailAdmin):
    title = "Failed tasks (the task function raised)"


for model, model_admin in ((Success, DeliveredTaskAdmin), (Failure, RaisedTaskAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
