import json
import threading

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from core.errors import ApplicationError
from evaluations.models import OptimizationRun, Optimizer, RunStatus
from evaluations.services.optimize import (
    optimization_create_named,
    optimization_get,
    optimization_process,
    optimization_promote,
    problem_lines,
)
from registry.models import DatasetSplit

POLL_S = 1.0


def _json_object(text: str, option: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{option} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CommandError(f"{option} must be a JSON object, e.g. '{{\"k\": 4}}'.")
    return value


def progress_line(run: OptimizationRun) -> str:
    best = "-" if run.best_score is None else f"{run.best_score:.3f}"
    baseline = "-" if run.baseline_score is None else f"{run.baseline_score:.3f}"
    return (
        f"    run {run.pk}: {run.status}, stage {run.stage or '-'}, trials "
        f"{run.trials_done}/{run.trials_total or '?'}, baseline {baseline}, best {best}"
    )


class ProgressPrinter:
    """Prints a run's progress line whenever it changes, from a thread polling its row, while
    the run is processed in this process or waited for in the workers."""

    def __init__(self, write, run_id: int) -> None:
        self.write, self.run_id = write, run_id
        self.last = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, name="optimize-progress", daemon=True)

    def __enter__(self) -> "ProgressPrinter":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join()
        self.show()

    def show(self) -> OptimizationRun:
        run = OptimizationRun.objects.get(pk=self.run_id)
        line = progress_line(run)
        if line != self.last:
            self.write(line)
            self.last = line
        return run

    def wait(self) -> None:
        while not self.stop.wait(POLL_S):
            if self.show().finished:
                return

    def _poll(self) -> None:
        try:
            while not self.stop.wait(POLL_S):
                self.show()
        finally:
            connection.close()


class Command(BaseCommand):
    help = (
        "Optimize a signature version with a DSPy optimizer on a dataset's train split, judged "
        "on its dev split. The result is a new version (nothing else changes, unless "
        "--promote); progress lines show the stage, trials and best dev score."
    )

    def add_arguments(self, parser):
        parser.add_argument("signature", help="Signature name, e.g. `qa`.")
        parser.add_argument(
            "--source-version",
            help="The version to optimize: a number or an alias (default: production, else "
            "the latest).",
        )
        parser.add_argument("--dataset", required=True, help="Dataset name, e.g. `starter`.")
        parser.add_argument(
            "--train-split", default=DatasetSplit.TRAIN, choices=DatasetSplit.values
        )
        parser.add_argument("--dev-split", default=DatasetSplit.DEV, choices=DatasetSplit.values)
        parser.add_argument("--metric", default="exact_match", help="Metric name or dotted path.")
        parser.add_argument("--metric-params", default="{}", help="The metric's params, JSON.")
        parser.add_argument("--student", required=True, help="Provider whose model is optimized.")
        parser.add_argument("--teacher", help="Teacher provider (MIPROv2's prompt model).")
        parser.add_argument("--optimizer", required=True, choices=Optimizer.values)
        parser.add_argument("--params", default="{}", help="Optimizer params, JSON: '{\"k\": 4}'.")
        parser.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
        parser.add_argument(
            "--here",
            action="store_true",
            help="Run it in this process instead of the workers (loads the model here).",
        )
        parser.add_argument(
            "--promote",
            action="store_true",
            help="Then promote the result to production if its dev score is better.",
        )

    def handle(self, *args, **options):
        try:
            run = optimization_create_named(
                signature=options["signature"],
                version=options["source_version"],
                dataset=options["dataset"],
                train_split=options["train_split"],
                dev_split=options["dev_split"],
                metric=options["metric"],
                metric_params=_json_object(options["metric_params"], "--metric-params"),
                student=options["student"],
                teacher=options["teacher"],
                optimizer=options["optimizer"],
                params=_json_object(options["params"], "--params"),
                seed=options["seed"],
                enqueue=not options["here"],
            )
        except ApplicationError as exc:
            raise CommandError(error_text(exc)) from exc
        where = "in this process" if options["here"] else "queued for the workers"
        self.stdout.write(f"Optimization run {run.pk} ({run.get_optimizer_display()}), {where}.")
        with ProgressPrinter(self.stdout.write, run.pk) as printer:
            if options["here"]:
                optimization_process(run_id=run.pk)
            else:
                printer.wait()
        run = optimization_get(run_id=run.pk)
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"Run {run.pk} {run.status}: {run.error_message or run.error_code}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Version {run.result_version.number} of {options['signature']}: "
                f"{run.metric} {run.best_score:.3f} on `{run.dev_split}` (version "
                f"{run.signature_version.number}: {run.baseline_score:.3f})."
            )
        )
        if options["promote"]:
            try:
                promotion = optimization_promote(run=run)
            except ApplicationError as exc:
                raise CommandError(f"Not promoted: {exc}") from exc
            self.stdout.write(
                self.style.SUCCESS(
                    f"Promoted: {promotion.alias_name} -> version {promotion.to_version.number}."
                )
            )


def error_text(exc: ApplicationError) -> str:
    """The error and each field's problem, one a line."""
    return "\n".join([exc.message, *problem_lines(exc.errors)])
