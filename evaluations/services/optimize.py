"""Optimization runs: a DSPy optimizer compiles a version against a train split, is judged on
a dev split, and leaves a new immutable version behind (nothing else changes: promotion is a
separate, explicit step, `registry.services.promotion`).

A run goes through four stages, each visible in `stage`:

- `baseline`: the source version is scored on the dev split (an evaluation run of its own,
  linked to this run, processed in this worker);
- `compiling`: the optimizer runs under the student's LM and adapter, seeded; each candidate
  program it scores is a trial (`trials_done`, `best_score`, `trajectory`);
- `scoring`: the compiled program is scored on the dev split;
- then the result version is created (its compiled state holds the demos and instructions)
  with its evaluation run and VersionScore.

Cancellation is checked between units of work: after each example the metric judges (in the
optimizing thread) and after each trial. An optimizer cannot be resumed, so a run whose worker
was lost is re-queued by the reaper and starts over; a baseline scored by an earlier attempt
is reused. Pools are refused as student and teacher: an optimizer calls its LM directly,
outside `provider_call`, and a pool would mix its members' models within one run.
"""

import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dspy
import numpy
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from dspy.utils.callback import BaseCallback

from core.errors import ApplicationError, Conflict, InvalidRequest, NotFound, field_error
from evaluations import metrics
from evaluations.models import EvaluationRun, OptimizationRun, Optimizer, RunStatus
from evaluations.services import evaluate, lifecycle
from providers.lms import provider_adapter, provider_build_lm
from providers.models import Provider
from providers.selectors import provider_get
from registry.models import Dataset, DatasetExample, DatasetSplit, SignatureVersion
from registry.programs import program_build
from registry.selectors import dataset_get, signature_version_resolve
from registry.services.versions import signature_version_create

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

SEED_MAX = 2**31 - 1


class InvalidOptimization(InvalidRequest):
    code = "invalid_optimization"
    default_message = "The optimization run cannot be created; see `errors` for each field."


class OptimizationNotFound(NotFound):
    code = "optimization_not_found"


class OptimizationNotFinished(Conflict):
    code = "optimization_not_finished"


class OptimizationStopped(BaseException):
    """Raised inside DSPy to abort a cancelled run. A BaseException, because the optimizers
    catch and count every Exception of a metric or a program as a failed example."""


def problem_lines(errors: dict, path: str = "") -> list[str]:
    """Each field's problem as `field: message`, nested fields joined by dots."""
    lines = []
    for key, value in errors.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            lines.extend(problem_lines(value, where))
        else:
            for item in value if isinstance(value, list) else [value]:
                text = item.get("message", item) if isinstance(item, dict) else item
                lines.append(f"{where}: {text}")
    return lines


# Parameters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One optimizer parameter: its type, default and allowed values."""

    kind: type
    default: Any
    description: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None if self.nullable else "must not be null."
        if self.kind is bool:
            return None if isinstance(value, bool) else "must be true or false."
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return "must be a whole number."
            if self.minimum is not None and value < self.minimum:
                return f"must be at least {self.minimum}."
            if self.maximum is not None and value > self.maximum:
                return f"must be at most {self.maximum}."
            return None
        if value not in (self.choices or ()):
            return f"must be one of {', '.join(self.choices or ())}" + (
                " or null." if self.nullable else "."
            )
        return None

    def describe(self) -> dict[str, Any]:
        shown = {"type": self.kind.__name__, "default": self.default, "help": self.description}
        for key in ("minimum", "maximum", "choices"):
            if getattr(self, key) is not None:
                shown[key] = getattr(self, key)
        if self.nullable:
            shown["nullable"] = True
        return shown


_DEMOS = {
    "max_bootstrapped_demos": Param(
        int, 4, "Demos made by running the teacher on train examples the metric accepts.", 0, 32
    ),
    "max_labeled_demos": Param(int, 4, "Demos taken as they are from the train split.", 0, 64),
}
_BOOTSTRAP = _DEMOS | {
    "max_rounds": Param(int, 1, "Attempts per train example to bootstrap a demo.", 1, 10),
}
_THREADS = {
    "num_threads": Param(int, 1, "Examples judged at once (a local model batches them).", 1, 16)
}

# The parameters each optimizer accepts (the rest are DSPy's defaults or set by the run).
OPTIMIZER_PARAMS: dict[str, dict[str, Param]] = {
    Optimizer.LABELED_FEW_SHOT: {
        "k": Param(int, 4, "Demos taken from the train split.", 1, 64),
    },
    Optimizer.BOOTSTRAP_FEW_SHOT: _BOOTSTRAP,
    Optimizer.BOOTSTRAP_RANDOM_SEARCH: _BOOTSTRAP
    | _THREADS
    | {
        "num_candidate_programs": Param(
            int,
            8,
            "Shuffled bootstrap candidates, besides zero-shot, labeled and unshuffled.",
            1,
            64,
        ),
    },
    Optimizer.MIPRO_V2: _DEMOS
    | _THREADS
    | {
        "auto": Param(
            str,
            "light",
            "A preset budget; null to set num_candidates and num_trials yourself.",
            choices=("light", "medium", "heavy"),
            nullable=True,
        ),
        "num_candidates": Param(
            int,
            None,
            "Instruction and demo candidates (only with auto null).",
            1,
            50,
            nullable=True,
        ),
        "num_trials": Param(
            int, None, "Search trials (only with auto null).", 1, 500, nullable=True
        ),
        "minibatch": Param(bool, True, "Score trials on minibatches of the dev split."),
        "minibatch_size": Param(int, 35, "Dev examples per minibatch.", 1, 1000),
        "minibatch_full_eval_steps": Param(
            int, 5, "Minibatch trials between full dev evaluations.", 1, 100
        ),
    },
}


def optimizer_catalogue() -> list[dict[str, Any]]:
    """Each optimizer with its parameters, for the API, the admin and the docs."""
    return [
        {
            "name": optimizer.value,
            "label": optimizer.label,
            "needs_teacher": optimizer == Optimizer.MIPRO_V2,
            "params": {
                name: param.describe() for name, param in OPTIMIZER_PARAMS[optimizer].items()
            },
        }
        for optimizer in Optimizer
    ]


def optimization_params_check(
    *, optimizer: str, params: dict[str, Any] | None, dev_count: int
) -> dict[str, Any]:
    """The parameters with every default filled in (so the run says exactly what ran), or
    InvalidOptimization naming each bad one."""
    params = params or {}
    if not isinstance(params, dict):
        raise InvalidOptimization(errors={"params": [field_error("invalid", "Must be an object.")]})
    rules = OPTIMIZER_PARAMS[optimizer]
    problems: dict[str, list] = {}
    for name in params:
        if name not in rules:
            allowed = ", ".join(rules)
            problems[name] = field_error(
                "unknown_param",
                f"{Optimizer(optimizer).label} takes no `{name}` (takes {allowed}).",
            )
    for name, rule in rules.items():
        problem = rule.problem(params.get(name, rule.default)) if name in params else None
        if problem:
            problems[name] = field_error("invalid_param", f"`{name}` {problem}")
    if problems:
        raise InvalidOptimization(errors={"params": problems})
    checked = {name: params.get(name, rule.default) for name, rule in rules.items()}
    if optimizer == Optimizer.MIPRO_V2:
        _mipro_params_check(checked, dev_count)
    return checked


def _mipro_params_check(params: dict[str, Any], dev_count: int) -> None:
    problems: dict[str, list] = {}
    if params["auto"] is None:
        for name in ("num_candidates", "num_trials"):
            if params[name] is None:
                problems[name] = field_error("required", f"`{name}` is required when auto is null.")
        if params["minibatch"] and params["minibatch_size"] > dev_count:
            problems["minibatch_size"] = field_error(
                "invalid_param",
                f"`minibatch_size` ({params['minibatch_size']}) exceeds the dev split's "
                f"{dev_count} examples; lower it or turn minibatch off.",
            )
    else:
        for name in ("num_candidates", "num_trials"):
            if params[name] is not None:
                problems[name] = field_error(
                    "invalid_param", f"`{name}` is set by auto={params['auto']}; set auto to null."
                )
    if problems:
        raise InvalidOptimization(errors={"params": problems})


# Creating, reading, cancelling ----------------------------------------------------------------


def _provider_problem(provider: Provider | None, role: str) -> str | None:
    if provider is None:
        return None
    if provider.kind == Provider.Kind.POOL:
        return (
            f"Provider '{provider.name}' is a pool: an optimizer calls one model directly, so "
            f"name one of its members as the {role}."
        )
    if not provider.enabled:
        return f"Provider '{provider.name}' is disabled."
    return None


def _split_count(dataset: Dataset, split: str) -> int:
    return DatasetExample.objects.filter(dataset=dataset, split=split).count()


@transaction.atomic
def optimization_create(
    *,
    version: SignatureVersion,
    dataset: Dataset,
    train_split: str,
    dev_split: str,
    metric: str,
    metric_params: dict[str, Any] | None = None,
    student_provider: Provider,
    teacher_provider: Provider | None = None,
    optimizer: str,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    user: Any = None,
    enqueue: bool = True,
) -> OptimizationRun:
    """Check everything a worker would trip over later, then queue the run (on the cluster
    the student's route names, once the transaction commits). With `enqueue=False` the caller
    runs it itself (`optimization_process`, e.g. `evaluations_optimize --here`)."""
    errors: dict[str, Any] = {}
    if dataset.signature_id != version.signature_id:
        errors["dataset"] = field_error(
            "wrong_signature",
            f"Dataset '{dataset.name}' belongs to '{dataset.signature.name}', not to "
            f"'{version.signature.name}'.",
        )
    counts = {}
    for key, split in (("train_split", train_split), ("dev_split", dev_split)):
        if split not in DatasetSplit.values:
            errors[key] = field_error(
                "invalid_split", f"Must be one of {', '.join(DatasetSplit.values)}."
            )
            continue
        counts[key] = _split_count(dataset, split)
        if not counts[key] and "dataset" not in errors:
            errors[key] = field_error(
                "empty_split", f"Dataset '{dataset.name}' has no `{split}` examples."
            )
    if train_split == dev_split and "train_split" not in errors:
        errors["dev_split"] = field_error(
            "same_split",
            "The dev split must differ from the train split: a score on the examples the "
            "optimizer learned from says nothing about new ones.",
        )
    for key, provider, role in (
        ("student_provider", student_provider, "student"),
        ("teacher_provider", teacher_provider, "teacher"),
    ):
        problem = _provider_problem(provider, role)
        if problem:
            errors[key] = field_error("invalid_provider", problem)
    if optimizer not in Optimizer.values:
        errors["optimizer"] = field_error(
            "invalid_optimizer", f"Must be one of {', '.join(Optimizer.values)}."
        )
    elif optimizer == Optimizer.MIPRO_V2 and teacher_provider is None:
        errors["teacher_provider"] = field_error(
            "teacher_required",
            "MIPROv2 proposes instructions with a prompt model: name a teacher provider (a "
            "capable model, for example a remote OpenAI-compatible one).",
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        errors["seed"] = field_error(
            "invalid_seed", f"Must be a whole number from 0 to {SEED_MAX}."
        )
    try:
        metrics.metric_resolve(name=metric, params=metric_params, version=version)
    except metrics.InvalidMetric as exc:
        errors["metric"] = field_error(exc.code, exc.message)
    checked_params: dict[str, Any] = {}
    if optimizer in Optimizer.values:
        try:
            checked_params = optimization_params_check(
                optimizer=optimizer, params=params, dev_count=counts.get("dev_split", 0)
            )
        except InvalidOptimization as exc:
            errors |= exc.errors
    if errors:
        raise InvalidOptimization(errors=errors)
    run = OptimizationRun.objects.create(
        signature_version=version,
        dataset=dataset,
        dataset_hash=dataset.content_hash,
        train_split=train_split,
        dev_split=dev_split,
        metric=metric,
        metric_params=metric_params or {},
        student_provider=student_provider,
        teacher_provider=teacher_provider,
        optimizer=optimizer,
        params=checked_params,
        seed=seed,
        created_by=user if getattr(user, "pk", None) is not None else None,
        stage="queued",
    )
    if enqueue:
        lifecycle.run_enqueue_on_commit(run=run)
    return run


def optimization_create_named(
    *,
    signature: str,
    version: int | str | None = None,
    dataset: str,
    student: str,
    teacher: str | None = None,
    **arguments: Any,
) -> OptimizationRun:
    """`optimization_create` from names, as the API and the commands receive them: the version
    by number or alias (omitted: `production`, else the latest), providers by name."""
    resolved = signature_version_resolve(name=signature, ref=version)
    return optimization_create(
        version=resolved,
        dataset=dataset_get(signature=resolved.signature, name=dataset),
        student_provider=provider_get(name=student),
        teacher_provider=provider_get(name=teacher) if teacher else None,
        **arguments,
    )


def optimization_list(
    *, signature: str | None = None, status: str | None = None
) -> QuerySet[OptimizationRun]:
    runs = OptimizationRun.objects.select_related(
        "signature_version__signature",
        "dataset",
        "student_provider",
        "teacher_provider",
        "result_version",
        "created_by",
    )
    if signature:
        runs = runs.filter(signature_version__signature__name=signature)
    if status:
        if status not in RunStatus.values:
            raise InvalidRequest(
                errors={"status": [f"Must be one of {', '.join(RunStatus.values)}."]}
            )
        runs = runs.filter(status=status)
    return runs


def optimization_get(*, run_id: int) -> OptimizationRun:
    try:
        return optimization_list().get(pk=run_id)
    except (OptimizationRun.DoesNotExist, ValueError, TypeError):
        raise OptimizationNotFound(f"No optimization run {run_id}.") from None


def _evaluations_stop(run: OptimizationRun, *, now: Clock) -> None:
    for evaluation in EvaluationRun.objects.filter(
        optimization_run=run, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    ):
        lifecycle.run_cancel(run=evaluation, now=now)


def optimization_cancel(*, run: OptimizationRun, now: Clock = timezone.now) -> OptimizationRun:
    """Cancel the run, and the evaluation it may be waiting on (its baseline)."""
    run = lifecycle.run_cancel(run=run, now=now)
    if run.cancel_requested:
        _evaluations_stop(run, now=now)
    return run


def optimization_promote(
    *, run: OptimizationRun, force: bool = False, reason: str = "", user: Any = None
):
    """Promote the run's result to `production`, judged on the run's own dataset, dev split
    and metric (`registry.services.promotion.version_promote`)."""
    from registry.services.promotion import version_promote

    if run.status != RunStatus.SUCCEEDED or run.result_version is None:
        raise OptimizationNotFinished(
            f"Optimization run {run.pk} is {run.status}: only a succeeded run has a result "
            "version to promote."
        )
    return version_promote(
        signature=run.signature_version.signature,
        version=run.result_version,
        dataset_hash=run.dataset_hash,
        split=run.dev_split,
        metric=run.metric,
        force=force,
        reason=reason or f"Result of optimization run {run.pk}.",
        user=user,
    )


# Running --------------------------------------------------------------------------------------


class _StopWatch:
    """Whether the run was cancelled. The optimizing thread asks the database (one indexed
    query, after a model call that takes far longer); the optimizer's worker threads only read
    the flag, which the thread sets at its next check (after each trial at the latest)."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.owner = threading.current_thread()
        self.stopped = False

    def check(self) -> None:
        if not self.stopped and threading.current_thread() is self.owner:
            self.stopped = lifecycle.run_cancel_requested(model=OptimizationRun, run_id=self.run_id)
        if self.stopped:
            raise OptimizationStopped


class _WatchedMetric:
    """The run's metric, checking for a cancellation after each judged example."""

    def __init__(self, metric: Callable, watch: _StopWatch) -> None:
        self.metric, self.watch = metric, watch
        self.__name__ = getattr(metric, "name", "metric")

    def __call__(self, example, prediction, trace=None):
        value = self.metric(example, prediction, trace)
        self.watch.check()
        return value


class _TrialRecorder(BaseCallback):
    """Each evaluation an optimizer runs (a candidate program on the dev split or on a
    minibatch of it) is a trial: its score goes into the trajectory and the progress. A
    cancellation seen after a trial stops the optimizer (DSPy lets a BaseException raised by
    an end handler through)."""

    def __init__(self, progress: "_Progress", watch: _StopWatch, dev_count: int) -> None:
        self.progress, self.watch, self.dev_count = progress, watch, dev_count
        self.sizes: dict[str, int] = {}

    def on_evaluate_start(self, call_id, instance, inputs):
        devset = inputs.get("devset") or instance.devset or []
        self.sizes[call_id] = len(devset)

    def on_evaluate_end(self, call_id, outputs, exception=None):
        size = self.sizes.pop(call_id, 0)
        if outputs is not None:
            self.progress.trial(
                score=float(outputs.score) / 100, examples=size, full=size >= self.dev_count
            )
        self.watch.check()


class _Progress:
    """The run's visible progress, written with guarded updates (only while it runs)."""

    def __init__(self, run: OptimizationRun) -> None:
        self.run = run
        self.trajectory: list[dict[str, Any]] = []
        self.trials_done = 0
        self.best: float | None = None

    def save(self, **fields: Any) -> None:
        OptimizationRun.objects.filter(pk=self.run.pk, status=RunStatus.RUNNING).update(**fields)

    def stage(self, stage: str, **fields: Any) -> None:
        self.save(stage=stage, **fields)

    def point(self, *, label: str, score: float, examples: int, full: bool = True) -> None:
        self.trajectory.append(
            {"label": label, "score": round(score, 4), "examples": examples, "full": full}
        )

    def trial(self, *, score: float, examples: int, full: bool) -> None:
        self.trials_done += 1
        self.point(label=f"trial {self.trials_done}", score=score, examples=examples, full=full)
        if full and (self.best is None or score > self.best):
            self.best = score
        total = max(self.run.trials_total, self.trials_done)
        self.run.trials_total = total
        self.save(
            trials_done=self.trials_done,
            trials_total=total,
            best_score=self.best,
            trajectory=self.trajectory,
        )


def _examples(run: OptimizationRun, split: str) -> list[DatasetExample]:
    return list(
        DatasetExample.objects.filter(dataset=run.dataset, split=split).order_by("position")
    )


def _trainset(run: OptimizationRun, examples: list[DatasetExample]) -> list[dspy.Example]:
    names = [field["name"] for field in run.signature_version.input_fields]
    return [
        metrics.dspy_example(
            inputs=example.inputs,
            outputs=example.outputs,
            accepted=example.accepted,
            input_names=names,
        )
        for example in examples
    ]


def _mipro_trials_total(optimizer: Any, student: dspy.Module, params: dict, dev_count: int) -> int:
    """MIPROv2's own count of its trials (the evaluations it will run, full and minibatch)."""
    zeroshot = params["max_bootstrapped_demos"] == 0 and params["max_labeled_demos"] == 0
    if params["auto"] is None:
        trials, minibatch = params["num_trials"], params["minibatch"]
    else:
        from dspy.teleprompt.mipro_optimizer_v2 import AUTO_RUN_SETTINGS, MIN_MINIBATCH_SIZE

        preset = AUTO_RUN_SETTINGS[params["auto"]]
        trials = optimizer._set_num_trials_from_num_candidates(student, zeroshot, preset["n"])
        minibatch = min(preset["val_size"], dev_count) > MIN_MINIBATCH_SIZE
    if not minibatch:
        return trials + 1
    steps = params["minibatch_full_eval_steps"]
    return trials + trials // steps + 1 + (1 if trials % steps else 0)


def _compile(
    run: OptimizationRun,
    *,
    student: dspy.Module,
    trainset: list[dspy.Example],
    devset: list[dspy.Example],
    metric: Callable,
    progress: _Progress,
) -> dspy.Module:
    """Run the optimizer; the student's LM and adapter are set around it by the caller."""
    from dspy import teleprompt

    params = run.params
    teacher_settings = {}
    if run.teacher_provider is not None:
        teacher_settings = {
            "lm": provider_build_lm(provider=run.teacher_provider),
            "adapter": provider_adapter(provider=run.teacher_provider),
        }
    if run.optimizer == Optimizer.LABELED_FEW_SHOT:
        return teleprompt.LabeledFewShot(k=params["k"]).compile(student, trainset=trainset)
    demos = {key: params[key] for key in ("max_bootstrapped_demos", "max_labeled_demos")}
    if run.optimizer == Optimizer.BOOTSTRAP_FEW_SHOT:
        optimizer = teleprompt.BootstrapFewShot(
            metric=metric,
            teacher_settings=teacher_settings,
            max_rounds=params["max_rounds"],
            **demos,
        )
        return optimizer.compile(student, trainset=trainset)
    if run.optimizer == Optimizer.BOOTSTRAP_RANDOM_SEARCH:
        optimizer = teleprompt.BootstrapFewShotWithRandomSearch(
            metric=metric,
            teacher_settings=teacher_settings,
            max_rounds=params["max_rounds"],
            num_candidate_programs=params["num_candidate_programs"],
            num_threads=params["num_threads"],
            **demos,
        )
        return optimizer.compile(student, trainset=trainset, valset=devset)
    optimizer = teleprompt.MIPROv2(
        metric=metric,
        prompt_model=teacher_settings["lm"],
        task_model=dspy.settings.lm,
        auto=params["auto"],
        num_candidates=params["num_candidates"],
        num_threads=params["num_threads"],
        seed=run.seed,
        **demos,
    )
    total = _mipro_trials_total(optimizer, student, params, len(devset))
    progress.run.trials_total = total
    progress.save(trials_total=total)
    return optimizer.compile(
        student,
        trainset=trainset,
        valset=devset,
        num_trials=params["num_trials"],
        seed=run.seed,
        minibatch=params["minibatch"],
        minibatch_size=params["minibatch_size"],
        minibatch_full_eval_steps=params["minibatch_full_eval_steps"],
        **demos,
    )


def _trials_total(run: OptimizationRun) -> int:
    if run.optimizer == Optimizer.BOOTSTRAP_RANDOM_SEARCH:
        # DSPy's three fixed candidates (zero-shot, labeled, unshuffled) and the shuffled ones.
        return run.params["num_candidate_programs"] + 3
    if run.optimizer == Optimizer.MIPRO_V2:
        return 0  # known once the optimizer is built (`_mipro_trials_total`)
    return 1


def _compiled_state(program: dspy.Module) -> dict[str, Any]:
    """The program's state without its LM (the provider is chosen per execution) and without
    the hidden keys DSPy examples carry (`dspy_accepted`)."""

    def clean(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {
                name: (None if name == "lm" else clean(item, name))
                for name, item in value.items()
                if not (key == "demo" and name.startswith("dspy_"))
            }
        if isinstance(value, list) and key == "demos":
            return [clean(item, "demo") for item in value]
        return value

    return clean(program.dump_state())


def _instructions(program: dspy.Module) -> str:
    return program.predictors()[0].signature.instructions


def _score_text(score: float | None) -> str:
    return "none" if score is None else f"{score:.3f}"


def _changelog(run: OptimizationRun, *, baseline: float | None, result: float | None) -> str:
    params = json.dumps(run.params, sort_keys=True)
    teacher = f", teacher {run.teacher_provider.name}" if run.teacher_provider else ""
    return (
        f"Optimization run {run.pk}: {run.get_optimizer_display()} {params}, seed {run.seed}, "
        f"student {run.student_provider.name}{teacher}; trained on `{run.train_split}` of "
        f"dataset '{run.dataset.name}' (sha256 {run.dataset_hash}). {run.metric} on "
        f"`{run.dev_split}`: {_score_text(result)} (version {run.signature_version.number}: "
        f"{_score_text(baseline)})."
    )


class _Optimization:
    """One attempt at a run, in the worker that claimed it."""

    def __init__(self, run: OptimizationRun, *, now: Clock) -> None:
        self.run, self.now = run, now
        self.watch = _StopWatch(run.pk)
        self.progress = _Progress(run)

    def execute(self) -> None:
        run = self.run
        if run.dataset.content_hash != run.dataset_hash:
            raise _Failure(
                "dataset_changed",
                f"Dataset '{run.dataset.name}' was re-imported after the run was created (its "
                "hash changed); create a new run on its current examples.",
            )
        # An earlier attempt (a lost worker) may have left its evaluation behind.
        _evaluations_stop(run, now=self.now)
        run.trials_total = _trials_total(run)
        self.progress.stage(
            "baseline",
            trials_done=0,
            trials_total=run.trials_total,
            best_score=None,
            trajectory=[],
            result_version=None,
        )
        baseline = self.baseline()
        self.progress.point(
            label=f"version {run.signature_version.number}",
            score=baseline.score,
            examples=baseline.total,
        )
        self.progress.stage(
            "compiling", baseline_score=baseline.score, trajectory=self.progress.trajectory
        )
        self.watch.check()
        compiled = self.compile()
        self.progress.stage("scoring")
        self.finish(compiled, baseline=baseline.score)

    def baseline(self) -> EvaluationRun:
        run = self.run
        earlier = EvaluationRun.objects.filter(
            optimization_run=run,
            signature_version=run.signature_version,
            split=run.dev_split,
            dataset_hash=run.dataset_hash,
            status=RunStatus.SUCCEEDED,
        ).first()
        if earlier is not None:
            return earlier
        evaluation = evaluate.evaluation_create(
            version=run.signature_version,
            dataset=run.dataset,
            split=run.dev_split,
            provider=run.student_provider,
            metric=run.metric,
            metric_params=run.metric_params,
            user=run.created_by,
            optimization_run=run,
            enqueue=False,
        )
        evaluate.evaluation_process(run_id=evaluation.pk, now=self.now)
        evaluation.refresh_from_db()
        if evaluation.status != RunStatus.SUCCEEDED:
            self.watch.check()
            raise _Failure(
                "baseline_failed",
                f"Scoring version {run.signature_version.number} on `{run.dev_split}` "
                f"(evaluation run {evaluation.pk}) ended {evaluation.status}: "
                f"{evaluation.error_message or evaluation.error_code}",
            )
        return evaluation

    def compile(self) -> dspy.Module:
        run = self.run
        version = run.signature_version
        student = program_build(name=version.signature.name, behaviour=version.behaviour())
        trainset = _trainset(run, _examples(run, run.train_split))
        devset = _trainset(run, _examples(run, run.dev_split))
        metric = metrics.metric_resolve(name=run.metric, params=run.metric_params, version=version)
        random.seed(run.seed)
        numpy.random.seed(run.seed)
        callbacks = []
        if run.optimizer in (Optimizer.BOOTSTRAP_RANDOM_SEARCH, Optimizer.MIPRO_V2):
            callbacks = [_TrialRecorder(self.progress, self.watch, len(devset))]
        with dspy.context(
            lm=provider_build_lm(provider=run.student_provider),
            adapter=provider_adapter(provider=run.student_provider),
            callbacks=callbacks,
        ):
            compiled = _compile(
                run,
                student=student,
                trainset=trainset,
                devset=devset,
                metric=_WatchedMetric(metric, self.watch),
                progress=self.progress,
            )
        if not callbacks:
            self.progress.trials_done = 1
            self.progress.save(trials_done=1)
        return compiled

    def finish(self, compiled: dspy.Module, *, baseline: float | None) -> None:
        run = self.run
        version = run.signature_version
        metric = metrics.metric_resolve(name=run.metric, params=run.metric_params, version=version)
        examples = _examples(run, run.dev_split)
        outcomes = evaluate.examples_score(
            program=compiled,
            provider=run.student_provider,
            metric=metric,
            examples=examples,
            on_outcome=lambda outcome: None,
            should_stop=lambda: lifecycle.run_cancel_requested(
                model=OptimizationRun, run_id=run.pk
            ),
            concurrency=settings.EVALUATIONS_CONCURRENCY,
        )
        self.watch.check()
        if len(outcomes) < len(examples):
            raise _Failure(
                "scoring_incomplete",
                f"Only {len(outcomes)} of {len(examples)} dev examples were scored.",
            )
        result_score, _, _ = evaluate.score_summary([outcome.score for outcome in outcomes])
        spec = version.behaviour() | {
            "instructions": _instructions(compiled),
            "compiled_state": _compiled_state(compiled),
        }
        with transaction.atomic():
            result = signature_version_create(
                signature=version.signature,
                spec=spec,
                changelog=_changelog(run, baseline=baseline, result=result_score),
                author=run.created_by,
            ).version
            evaluation = evaluate.evaluation_from_outcomes(
                version=result,
                dataset=run.dataset,
                split=run.dev_split,
                provider=run.student_provider,
                metric=run.metric,
                metric_params=run.metric_params,
                outcomes=outcomes,
                optimization_run=run,
                user=run.created_by,
            )
            self.progress.point(
                label=f"version {result.number}", score=evaluation.score, examples=len(outcomes)
            )
            finished = lifecycle.run_finish(
                model=OptimizationRun,
                run_id=run.pk,
                status=RunStatus.SUCCEEDED,
                now=self.now,
                stage="done",
                result_version=result,
                best_score=evaluation.score,
                trajectory=self.progress.trajectory,
                trials_done=max(self.progress.trials_done, 1),
            )
            if not finished:
                # Cancelled or reaped meanwhile: the run's outcome is theirs, and no version
                # it did not finish is left behind.
                transaction.set_rollback(True)


class _Failure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _stopped(run_id: int, *, now: Clock) -> None:
    lifecycle.run_finish(
        model=OptimizationRun,
        run_id=run_id,
        status=RunStatus.CANCELLED,
        now=now,
        error_code="cancelled",
        error_message=lifecycle.CANCELLED_MESSAGE,
    )
    _evaluations_stop(OptimizationRun(pk=run_id), now=now)


def optimization_process(*, run_id: int, now: Clock = timezone.now) -> str:
    """The worker's side of a run: claim it, run every stage, record the outcome. Returns the
    run's final status (or the status it has when another delivery holds it)."""
    if not lifecycle.run_claim(model=OptimizationRun, run_id=run_id, now=now):
        return OptimizationRun.objects.get(pk=run_id).status
    run = optimization_list().get(pk=run_id)
    with lifecycle.RunHeartbeat(model=OptimizationRun, run_id=run_id, now=now):
        try:
            _Optimization(run, now=now).execute()
        except OptimizationStopped:
            _stopped(run_id, now=now)
        except _Failure as failure:
            _fail(run_id, code=failure.code, message=failure.message, now=now)
        except ApplicationError as error:
            _fail(run_id, code=error.code, message=error.message, now=now)
        except dspy.LMError as error:
            _fail(run_id, code="provider_error", message=str(error), now=now)
        except Exception as error:
            logger.exception("Optimization run %s failed", run_id)
            _fail(
                run_id,
                code="optimizer_failed",
                message=f"{type(error).__name__}: {error}",
                now=now,
            )
    return OptimizationRun.objects.get(pk=run_id).status


def _fail(run_id: int, *, code: str, message: str, now: Clock) -> None:
    if lifecycle.run_cancel_requested(model=OptimizationRun, run_id=run_id):
        _stopped(run_id, now=now)
        return
    lifecycle.run_finish(
        model=OptimizationRun,
        run_id=run_id,
        status=RunStatus.FAILED,
        now=now,
        error_code=code,
        error_message=message[:2000],
    )
