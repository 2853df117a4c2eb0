"""django-q2 tasks of the evaluations app. They take ids and call services."""

from evaluations.services import lifecycle
from evaluations.services.evaluate import evaluation_process
from evaluations.services.optimize import optimization_process


def evaluation_run(run_id: int) -> str:
    return evaluation_process(run_id=run_id)


def optimization_run(run_id: int) -> str:
    return optimization_process(run_id=run_id)


def runs_reap_stale() -> str:
    result = lifecycle.runs_reap_stale()
    return (
        f"requeued {len(result.requeued)}, ended {len(result.failed)}, "
        f"enqueued again {len(result.enqueued)}"
    )
