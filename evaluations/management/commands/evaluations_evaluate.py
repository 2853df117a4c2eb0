import json
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from core.errors import ApplicationError
from evaluations.models import EvaluationRun, RunStatus
from evaluations.services.evaluate import (
    evaluation_create_named,
    evaluation_process,
    evaluation_progress,
)
from providers.selectors import provider_get_default
from registry.models import DatasetSplit

POLL_S = 1.0


def progress_line(run: EvaluationRun) -> str:
    progress = evaluation_progress(run)
    eta = f", about {progress['eta_s']:.0f} s left" if progress["eta_s"] is not None else ""
    return (
        f"    run {run.pk}: {run.status}, {progress['done']}/{progress['total']} "
        f"({progress['percent']:g}%), {progress['errors']} error(s){eta}"
    )


class ProgressPrinter:
    """Prints the run's progress line whenever it changes, polling its row from a thread
    while this process scores the run (`--here`)."""

    def __init__(self, write, run_id: int) -> None:
        self.write, self.run_id = write, run_id
        self.last = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, name="evaluate-progress", daemon=True)

    def __enter__(self) -> "ProgressPrinter":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join()

    def show(self) -> EvaluationRun | None:
        # None while the row is not visible to this thread's connection yet.
        run = EvaluationRun.objects.filter(pk=self.run_id).first()
        if run is not None:
            line = progress_line(run)
            if line != self.last:
                self.write(line)
                self.last = line
        return run

    def _poll(self) -> None:
        try:
            while not self.stop.wait(POLL_S):
                self.show()
        finally:
            connection.close()


class Command(BaseCommand):
    help = (
        "Evaluate a signature version on a dataset split: create the run, then follow it with "
        "a progress line (done/total, errors, ETA) until it ends, and print its score with its "
        "95% confidence interval. The run goes to the django-q2 workers (the inference cluster "
        "for a local model); --here scores it in this process instead (no cluster needed)."
    )

    def add_base_argument(self, parser, *args, **kwargs):
        # Here `--version` picks the signature's version; Django's own (its release) gives way.
        if "--version" not in args:
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("signature", help="The signature's name, e.g. qa.")
        parser.add_argument("--dataset", required=True, help="One of the signature's datasets.")
        parser.add_argument(
            "--split",
            default=DatasetSplit.DEV,
            choices=DatasetSplit.values,
            help="The split to score (default: dev).",
        )
        parser.add_argument(
            "--provider",
            help="The provider to run the version on (default: the default local provider).",
        )
        parser.add_argument(
            "--metric",
            default="exact_match",
            help="A built-in metric or a dotted path to a metric function (default: exact_match).",
        )
        parser.add_argument(
            "--version",
            dest="ref",
            help="A version number or alias (default: production, else the latest).",
        )
        parser.add_argument(
            "--params",
            default="{}",
            help="The metric's params as JSON, e.g. '{\"threshold\": 0.5}'.",
        )
        parser.add_argument(
            "--here",
            action="store_true",
            help="Score the run in this process instead of handing it to the workers.",
        )

    def handle(
        self, *args, signature, dataset, split, provider, metric, ref, params, here, **options
    ):
        metric_params = _json_object(params)
        try:
            provider_name = provider or provider_get_default().name
            run = evaluation_create_named(
                signature=signature,
                version=ref,
                dataset=dataset,
                split=split,
                provider=provider_name,
                metric=metric,
                metric_params=metric_params,
                enqueue=not here,
            )
        except ApplicationError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Evaluation run {run.pk}: {run.signature_version} on {run.dataset.name} "
            f"({run.dataset_hash[:12]}) {run.split}, {run.total} examples, provider "
            f"{provider_name}, metric {metric}"
        )
        try:
            if here:
                with ProgressPrinter(self.stdout.write, run.pk):
                    evaluation_process(run_id=run.pk)
            else:
                self._follow(run.pk)
        except KeyboardInterrupt:
            raise CommandError(
                f"Stopped following run {run.pk}"
                + ("" if here else "; it goes on in the workers")
                + f" (cancel it with POST /api/v1/evaluations/{run.pk}/cancel/ or in the admin)."
            ) from None
        self._report(EvaluationRun.objects.get(pk=run.pk))

    def _follow(self, run_id: int) -> None:
        last = ""
        while True:
            run = EvaluationRun.objects.get(pk=run_id)
            line = progress_line(run)
            if line != last:
                self.stdout.write(line)
                last = line
            if run.finished:
                return
            time.sleep(POLL_S)

    def _report(self, run: EvaluationRun) -> None:
        self.stdout.write(progress_line(run))
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"Run {run.pk} {run.status}: {run.error_code}: {run.error_message}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Score {run.score:.3f} (95% CI {run.ci_low:.3f}-{run.ci_high:.3f}) on "
                f"{run.done} examples, {run.errors} error(s); tokens {run.input_tokens} in, "
                f"{run.output_tokens} out. Recorded as a score of {run.signature_version}."
            )
        )


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--params is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CommandError("--params must be a JSON object, e.g. '{\"threshold\": 0.5}'.")
    return value
