import json

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from evaluations.models import EvaluationRun
from evaluations.services.evaluate import evaluation_compare, evaluation_get


def _run_line(label: str, run: EvaluationRun) -> str:
    score = "-" if run.score is None else f"{run.score:.3f}"
    interval = "" if run.ci_low is None else f" [{run.ci_low:.3f}, {run.ci_high:.3f}]"
    return (
        f"{label}: run {run.pk} {run.signature_version} on {run.provider.name}, {run.metric}, "
        f"{run.status}: {score}{interval} ({run.done}/{run.total}, {run.errors} error(s))"
    )


def _text(value) -> str:
    return "-" if value is None else json.dumps(value, ensure_ascii=False)


class Command(BaseCommand):
    help = (
        "Compare two evaluation runs on the same data (dataset content hash and split): both "
        "scores, and each example where their prediction or score differs."
    )

    def add_arguments(self, parser):
        parser.add_argument("a", help="The first run's id.")
        parser.add_argument("b", help="The second run's id.")
        parser.add_argument(
            "--limit", type=int, default=50, help="Differences to list (default: 50)."
        )

    def handle(self, *args, a, b, limit, **options):
        if limit < 0:
            raise CommandError("--limit must be 0 or more.")
        try:
            comparison = evaluation_compare(
                a=evaluation_get(run_id=a), b=evaluation_get(run_id=b), limit=limit
            )
        except ApplicationError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(_run_line("a", comparison.a))
        self.stdout.write(_run_line("b", comparison.b))
        self.stdout.write(
            f"{comparison.compared} examples scored by both; they differ on "
            f"{comparison.differences_total}: b better on {comparison.better}, worse on "
            f"{comparison.worse}."
        )
        for difference in comparison.differences:
            self.stdout.write(
                f"  #{difference.position} {difference.change}: {_text(difference.inputs)} "
                f"expected {_text(difference.expected)}\n"
                f"      a {_text(difference.a_prediction)} ({difference.a_score}) "
                f"{difference.a_error_code}\n"
                f"      b {_text(difference.b_prediction)} ({difference.b_score}) "
                f"{difference.b_error_code}"
            )
        hidden = comparison.differences_total - len(comparison.differences)
        if hidden > 0:
            self.stdout.write(f"  ... and {hidden} more (--limit).")
