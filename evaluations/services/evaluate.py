"""Evaluation runs: one signature version scored on one dataset split with one provider and one
metric, in the django-q2 workers.

The worker (`evaluation_process`) claims the run, builds the program once, and scores the
examples not yet scored in a thread pool (`examples_score`), so that a local model's scheduler
decodes them together. Each example goes through `provider_call` (breaker, pools, scrubbing,
tokens, the raw output) and then the metric; a provider's or a metric's failure is that
example's error (score 0, counted in `errors`), never the run's. Each result is saved as it
comes, unique per position, so a run whose worker was lost resumes where it stopped and no
example is scored twice. A finished run records a `VersionScore` (registry) that promotion
reads.

Only the run's own provider is called, never its fallbacks: the score names what it measured.
"""

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Any, Protocol

import dspy
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone

from core.db import CONNECTION_ERRORS, db_retry
from core.errors import ApplicationError, InvalidRequest, NotFound, field_error
from core.secrets import known_secrets, scrub
from evaluations.metrics import InvalidMetric, Metric, MetricFailed, dspy_example, metric_resolve
from evaluations.models import EvaluationResult, EvaluationRun, OptimizationRun, RunStatus
from evaluations.services import lifecycle
from providers.calls import provider_call
from providers.exceptions import ProviderDisabled
from providers.models import Provider
from providers.selectors import provider_get
from registry.models import Dataset, DatasetExample, DatasetSplit, SignatureVersion, VersionScore
from registry.selectors import dataset_get, signature_version_resolve
from registry.services.scores import version_score_record
from registry.services.versions import signature_version_build
from registry.specs import name_problem

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# The toolkit's own words for failures whose cause is in the log, not in client text.
INTERNAL_MESSAGE = "The toolkit failed while running this evaluation; the error was logged."


# Errors ---------------------------------------------------------------------------------------


class EvaluationError(ApplicationError):
    code = "evaluation_error"


class InvalidEvaluation(EvaluationError, InvalidRequest):
    """An evaluation request that cannot run: `errors` names the field at fault."""

    code = "invalid_evaluation"

    def __init__(self, field_name: str, code: str, message: str) -> None:
        super().__init__(message, errors={field_name: field_error(code, message)})


class EvaluationNotFound(EvaluationError, NotFound):
    code = "evaluation_not_found"


class EvaluationsNotComparable(EvaluationError, InvalidRequest):
    code = "not_comparable"


# Scoring examples -----------------------------------------------------------------------------


class ScorableExample(Protocol):
    """What `examples_score` needs of an example (a `DatasetExample` has it)."""

    position: int
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    accepted: dict[str, Any]


@dataclass(frozen=True)
class ExampleOutcome:
    """One example scored: what was asked and expected, what came back, and its score (0 for
    an example whose provider call or metric failed, which then has an `error_code`)."""

    position: int
    inputs: dict[str, Any]
    expected: dict[str, Any]
    accepted: dict[str, Any]
    prediction: dict[str, Any] | None
    raw_output: str
    score: float
    error_code: str
    error_message: str
    latency_ms: float
    input_tokens: int
    output_tokens: int

    @property
    def failed(self) -> bool:
        return bool(self.error_code)


def _without_nul(value: Any) -> Any:
    # PostgreSQL stores no U+0000 in text or jsonb, and a model may well generate one.
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {str(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _without_nul(str(value))


def _jsonable(outputs: dict[str, Any]) -> dict[str, Any]:
    # Typed outputs (a list, a dict, a float) as JSON has them; anything else as its text.
    return json.loads(json.dumps(outputs, default=str))


def _unit_score(value: Any) -> float:
    """A metric's value as a score in [0, 1]; a ValueError for anything else."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"returned {value!r}, not a number from 0 to 1")
    return float(value)


def example_score(
    *, program: dspy.Module, provider: Provider, metric: Metric, example: ScorableExample
) -> ExampleOutcome:
    """Score one example: one guarded call of the provider, then the metric."""
    call = provider_call(provider=provider, program=program, inputs=example.inputs, keep_trace=True)
    common = {
        "position": example.position,
        "inputs": example.inputs,
        "expected": example.outputs,
        "accepted": example.accepted,
        "raw_output": call.raw_output,
        "latency_ms": call.duration_s * 1000,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
    }
    if not call.succeeded:
        return ExampleOutcome(
            **common,
            prediction=None,
            score=0.0,
            error_code=call.error_code,
            error_message=call.public_message,
        )
    outputs = call.result.outputs
    prediction = _jsonable(outputs)
    try:
        score = _unit_score(
            metric(
                dspy_example(
                    inputs=example.inputs,
                    outputs=example.outputs,
                    accepted=example.accepted,
                    input_names=list(example.inputs),
                ),
                dspy.Prediction(**outputs),
            )
        )
    except Exception as error:
        # A metric is an operator's code (a dotted path) or calls a judge model: its failure
        # is this example's, in its own words (scrubbed: it may quote a judge's key).
        if isinstance(error, MetricFailed):
            text = error.message
        else:
            text = f"The metric {metric.name} failed: {type(error).__name__}: {error}"
        return ExampleOutcome(
            **common,
            prediction=prediction,
            score=0.0,
            error_code=MetricFailed.code,
            error_message=scrub(text, secrets=known_secrets())[:2000],
        )
    return ExampleOutcome(
        **common, prediction=prediction, score=score, error_code="", error_message=""
    )


def _score_in_thread(**arguments: Any) -> ExampleOutcome:
    try:
        return example_score(**arguments)
    finally:
        # The breaker's queries opened this thread's own connection: close it, not leak it.
        connection.close()


def examples_score(
    *,
    program: dspy.Module,
    provider: Provider,
    metric: Metric,
    examples: Iterable[ScorableExample],
    on_outcome: Callable[[ExampleOutcome], None],
    should_stop: Callable[[], bool] = lambda: False,
    concurrency: int | None = None,
) -> list[ExampleOutcome]:
    """Score `examples` with up to `concurrency` (default `EVALUATIONS_CONCURRENCY`) calls in
    flight, so a local model's scheduler batches them. `on_outcome` receives each outcome in
    this thread as it comes (in completion order); `should_stop` is asked before each example
    is started, and once it says so no further example starts (those in flight finish and are
    reported). Returns the outcomes in completion order.

    With a concurrency of 1 every call runs in this thread (and on its database connection);
    otherwise in pool threads with connections of their own, which see committed rows only.
    """
    width = max(1, concurrency if concurrency is not None else settings.EVALUATIONS_CONCURRENCY)
    shared = {"program": program, "provider": provider, "metric": metric}
    outcomes: list[ExampleOutcome] = []

    def report(outcome: ExampleOutcome) -> None:
        outcomes.append(outcome)
        on_outcome(outcome)

    remaining = iter(examples)
    if width == 1:
        for example in remaining:
            if should_stop():
                break
            report(example_score(example=example, **shared))
        return outcomes
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="evaluation") as pool:
        in_flight: set[Future] = set()
        starting = True
        while True:
            while starting and len(in_flight) < width:
                example = next(remaining, None)
                if example is None or should_stop():
                    starting = False
                    break
                in_flight.add(pool.submit(_score_in_thread, example=example, **shared))
            if not in_flight:
                return outcomes
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                report(future.result())


# Aggregates -----------------------------------------------------------------------------------

# Two-sided 95% quantiles of Student's t by degrees of freedom; beyond 30 the normal's.
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z_975 = 1.959964


def score_summary(scores: list[float]) -> tuple[float, float, float]:
    """The mean of `scores` and its 95% confidence interval: Wilson's for 0/1 scores (right
    even at 0 or n of n, where the normal interval collapses), else Student's t, clipped to
    [0, 1]. One score says nothing about the spread: its interval is [0, 1]."""
    n = len(scores)
    if n == 0:
        raise ValueError("No scores to summarise.")
    mean = sum(scores) / n
    if all(score in (0.0, 1.0) for score in scores):
        z2 = _Z_975**2
        centre = (mean + z2 / (2 * n)) / (1 + z2 / n)
        half = _Z_975 * math.sqrt(mean * (1 - mean) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        # Exact at the ends (where rounding would leave 0.9999999999999999).
        low = 0.0 if mean == 0 else max(0.0, centre - half)
        high = 1.0 if mean == 1 else min(1.0, centre + half)
        return mean, low, high
    if n == 1:
        return mean, 0.0, 1.0
    deviation = math.sqrt(sum((score - mean) ** 2 for score in scores) / (n - 1))
    quantile = _T_975[n - 2] if n - 1 <= len(_T_975) else _Z_975
    half = quantile * deviation / math.sqrt(n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def _model_label(provider: Provider) -> str:
    # A local model is a directory: its name is the model's ("SmolLM2-135M-Instruct").
    if provider.kind == Provider.Kind.MLX:
        return PurePath(provider.model).name
    return provider.model


def _score_record(run: EvaluationRun) -> VersionScore:
    return version_score_record(
        version=run.signature_version,
        dataset=run.dataset,
        dataset_hash=run.dataset_hash,
        split=run.split,
        metric=run.metric,
        score=run.score,
        examples=run.done,
        source=VersionScore.Source.EVALUATION,
        provider_name=run.provider.name,
        model=_model_label(run.provider),
        ci_low=run.ci_low,
        ci_high=run.ci_high,
        reference=f"evaluation run {run.pk}",
    )


# Creating runs --------------------------------------------------------------------------------


def _split_examples(*, dataset: Dataset, split: str) -> QuerySet[DatasetExample]:
    return DatasetExample.objects.filter(dataset=dataset, split=split).order_by("position")


def _checked(
    *,
    version: SignatureVersion,
    dataset: Dataset,
    split: str,
    provider: Provider,
    metric: str,
    metric_params: dict | None,
) -> None:
    """Refuse a request whose parts do not fit together (the metric is resolved to check it;
    the worker resolves it again from the names stored)."""
    if dataset.signature_id != version.signature_id:
        raise InvalidEvaluation(
            "dataset",
            "wrong_signature",
            f"The dataset {dataset.name!r} belongs to the signature {dataset.signature.name!r}, "
            f"not to {version.signature.name!r}.",
        )
    if split not in DatasetSplit.values:
        raise InvalidEvaluation(
            "split",
            "invalid_choice",
            f"{split!r} is not a split; choose one of {', '.join(DatasetSplit.values)}.",
        )
    if not provider.enabled:
        raise ProviderDisabled(provider.name)
    if metric_params is not None and not isinstance(metric_params, dict):
        raise InvalidEvaluation("metric_params", "wrong_type", "Expected a JSON object.")
    metric_resolve(name=metric, params=metric_params, version=version)


@transaction.atomic
def evaluation_create(
    *,
    version: SignatureVersion,
    dataset: Dataset,
    split: str,
    provider: Provider,
    metric: str,
    metric_params: dict | None = None,
    user: Any = None,
    optimization_run: OptimizationRun | None = None,
    enqueue: bool = True,
) -> EvaluationRun:
    """A queued evaluation run, handed to the workers once the transaction commits (unless
    `enqueue` is false: then `evaluation_score_inline` runs it). It keeps the dataset's content
    hash and the number of examples of the split, which must not be empty."""
    _checked(
        version=version,
        dataset=dataset,
        split=split,
        provider=provider,
        metric=metric,
        metric_params=metric_params,
    )
    # Locked, so the examples counted are those of the content hash stored (an import
    # replaces a dataset's examples in one transaction that updates this row).
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    total = _split_examples(dataset=dataset, split=split).count()
    if total == 0:
        raise InvalidEvaluation(
            "split",
            "empty_split",
            f"The dataset {dataset.name!r} has no examples in its {split} split.",
        )
    run = EvaluationRun.objects.create(
        signature_version=version,
        dataset=dataset,
        dataset_hash=dataset.content_hash,
        split=split,
        provider=provider,
        metric=metric,
        metric_params=metric_params or {},
        total=total,
        created_by=user if getattr(user, "pk", None) is not None else None,
        optimization_run=optimization_run,
    )
    if enqueue:
        lifecycle.run_enqueue_on_commit(run=run)
    return run


def evaluation_create_named(
    *,
    signature: str,
    version: int | str | None,
    dataset: str,
    split: str,
    provider: str,
    metric: str,
    metric_params: dict | None = None,
    user: Any = None,
    enqueue: bool = True,
) -> EvaluationRun:
    """`evaluation_create` from names, as the API and the commands receive them: the version
    by number or alias (omitted: `production`, else the latest)."""
    resolved = signature_version_resolve(name=signature, ref=version)
    return evaluation_create(
        version=resolved,
        dataset=dataset_get(signature=resolved.signature, name=dataset),
        split=split,
        provider=provider_get(name=provider),
        metric=metric,
        metric_params=metric_params,
        user=user,
        enqueue=enqueue,
    )


# The worker -----------------------------------------------------------------------------------


def _status(run_id: int) -> str:
    return db_retry(
        lambda: (
            EvaluationRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
            or "missing"
        )
    )


def _result_fields(outcome: ExampleOutcome) -> dict[str, Any]:
    return {
        "prediction": _without_nul(outcome.prediction),
        "raw_output": _without_nul(outcome.raw_output),
        "score": outcome.score,
        "error_code": outcome.error_code,
        "error_message": _without_nul(outcome.error_message),
        "latency_ms": outcome.latency_ms,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
    }


def evaluation_result_save(*, run_id: int, outcome: ExampleOutcome) -> bool:
    """Save one outcome and count it in the run, together; False when its position was saved
    already (another delivery of the run, or an earlier try of this write that went through)."""

    def write() -> bool:
        try:
            with transaction.atomic():
                EvaluationResult.objects.create(
                    run_id=run_id,
                    position=outcome.position,
                    inputs=outcome.inputs,
                    expected=outcome.expected,
                    accepted=outcome.accepted,
                    **_result_fields(outcome),
                )
                EvaluationRun.objects.filter(pk=run_id).update(
                    done=F("done") + 1,
                    errors=F("errors") + int(outcome.failed),
                    input_tokens=F("input_tokens") + outcome.input_tokens,
                    output_tokens=F("output_tokens") + outcome.output_tokens,
                )
        except IntegrityError:
            return False
        return True

    return db_retry(write)


@dataclass(frozen=True)
class _Totals:
    done: int
    errors: int
    input_tokens: int
    output_tokens: int
    scores: list[float] = field(default_factory=list)
    error_codes: Counter = field(default_factory=Counter)


def _totals(run_id: int) -> _Totals:
    """The run's counts from its saved results (what the F() updates add up to)."""
    results = EvaluationResult.objects.filter(run_id=run_id)
    sums = results.aggregate(
        done=Count("id"),
        errors=Count("id", filter=~Q(error_code="")),
        input_tokens=Sum("input_tokens", default=0),
        output_tokens=Sum("output_tokens", default=0),
    )
    return _Totals(
        **sums,
        scores=[score or 0.0 for score in results.values_list("score", flat=True)],
        error_codes=Counter(results.exclude(error_code="").values_list("error_code", flat=True)),
    )


def _fail(run_id: int, *, now: Clock, code: str, message: str) -> str:
    lifecycle.run_finish(
        model=EvaluationRun,
        run_id=run_id,
        status=RunStatus.FAILED,
        now=now,
        error_code=code,
        error_message=message,
    )
    return _status(run_id)


def evaluation_process(*, run_id: int, now: Clock = timezone.now) -> str:
    """The worker of an evaluation run: claim it, score the examples it has not scored yet,
    finish it. Returns the run's status at the end (that of the run as another delivery or
    the reaper left it, when this one could not claim it)."""
    if not lifecycle.run_claim(model=EvaluationRun, run_id=run_id, now=now):
        return _status(run_id)
    with lifecycle.RunHeartbeat(model=EvaluationRun, run_id=run_id, now=now):
        try:
            return _evaluation_work(run_id=run_id, now=now)
        except CONNECTION_ERRORS:
            # No outcome can be written: the run stays running and the reaper takes it back
            # once its heartbeat is stale (the saved results are kept for the next attempt).
            logger.exception("Evaluation run %s lost the database", run_id)
            raise
        except Exception:
            logger.exception("Evaluation run %s failed inside the toolkit", run_id)
            return _fail(run_id, now=now, code="internal_error", message=INTERNAL_MESSAGE)


def _evaluation_work(*, run_id: int, now: Clock) -> str:
    run = db_retry(
        lambda: EvaluationRun.objects.select_related(
            "signature_version__signature", "dataset", "provider"
        ).get(pk=run_id)
    )
    if run.dataset.content_hash != run.dataset_hash:
        return _fail(
            run_id,
            now=now,
            code="dataset_changed",
            message=(
                f"The dataset {run.dataset.name!r} was re-imported after the run was created "
                "(its content hash changed): create a new evaluation."
            ),
        )
    try:
        metric = metric_resolve(
            name=run.metric, params=run.metric_params, version=run.signature_version
        )
    except InvalidMetric as error:
        return _fail(run_id, now=now, code=error.code, message=error.message)
    program = signature_version_build(version=run.signature_version)
    examples = db_retry(
        lambda: list(
            _split_examples(dataset=run.dataset, split=run.split).exclude(
                position__in=EvaluationResult.objects.filter(run_id=run_id).values("position")
            )
        )
    )

    def should_stop() -> bool:
        # Cancelled, or no longer this worker's (the reaper ended it).
        return not db_retry(
            lambda: EvaluationRun.objects.filter(
                pk=run_id, status=RunStatus.RUNNING, cancel_requested=False
            ).exists()
        )

    examples_score(
        program=program,
        provider=run.provider,
        metric=metric,
        examples=examples,
        on_outcome=lambda outcome: evaluation_result_save(run_id=run_id, outcome=outcome),
        should_stop=should_stop,
    )
    return _evaluation_end(run_id=run_id, now=now)


def _evaluation_end(*, run_id: int, now: Clock) -> str:
    run = db_retry(lambda: EvaluationRun.objects.get(pk=run_id))
    if run.status != RunStatus.RUNNING:
        return run.status
    totals = db_retry(lambda: _totals(run_id))
    counts = {
        "done": totals.done,
        "errors": totals.errors,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
    }
    if run.cancel_requested:
        lifecycle.run_finish(
            model=EvaluationRun,
            run_id=run_id,
            status=RunStatus.CANCELLED,
            now=now,
            error_code="cancelled",
            error_message=lifecycle.CANCELLED_MESSAGE,
            **counts,
        )
        return _status(run_id)
    if totals.errors == totals.done:
        # Nothing was measured: a score of 0 would say the version is bad, not the provider.
        codes = ", ".join(f"{code} x{count}" for code, count in totals.error_codes.most_common())
        lifecycle.run_finish(
            model=EvaluationRun,
            run_id=run_id,
            status=RunStatus.FAILED,
            now=now,
            error_code="examples_failed",
            error_message=f"Every example failed ({codes}); see the results.",
            **counts,
        )
        return _status(run_id)
    score, ci_low, ci_high = score_summary(totals.scores)

    @transaction.atomic
    def finish() -> bool:
        finished = EvaluationRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
            status=RunStatus.SUCCEEDED,
            finished_at=now(),
            score=score,
            ci_low=ci_low,
            ci_high=ci_high,
            error_code="",
            error_message="",
            **counts,
        )
        if finished:
            _score_record(
                EvaluationRun.objects.select_related(
                    "signature_version", "dataset", "provider"
                ).get(pk=run_id)
            )
        return bool(finished)

    # A retry after a lost connection finds the run finished (with its score, in the same
    # transaction) and records nothing twice.
    db_retry(finish)
    return _status(run_id)


def evaluation_score_inline(*, run: EvaluationRun) -> EvaluationRun:
    """Run a created, not enqueued run to its end in this process (an optimization run's
    worker scoring its baseline; `evaluations_evaluate --here`)."""
    evaluation_process(run_id=run.pk)
    run.refresh_from_db()
    return run


@transaction.atomic
def evaluation_from_outcomes(
    *,
    version: SignatureVersion,
    dataset: Dataset,
    split: str,
    provider: Provider,
    metric: str,
    metric_params: dict | None,
    outcomes: list[ExampleOutcome],
    optimization_run: OptimizationRun | None = None,
    user: Any = None,
) -> EvaluationRun:
    """A finished run with its results and its VersionScore, from outcomes computed elsewhere
    (an optimizer scores a compiled program before its version exists)."""
    if dataset.signature_id != version.signature_id:
        raise InvalidEvaluation(
            "dataset",
            "wrong_signature",
            f"The dataset {dataset.name!r} does not belong to {version.signature.name!r}.",
        )
    if not outcomes:
        raise InvalidEvaluation("outcomes", "empty", "There are no outcomes to record.")
    moment = timezone.now()
    failed = sum(outcome.failed for outcome in outcomes)
    score, ci_low, ci_high = score_summary([outcome.score for outcome in outcomes])
    run = EvaluationRun.objects.create(
        signature_version=version,
        dataset=dataset,
        dataset_hash=dataset.content_hash,
        split=split,
        provider=provider,
        metric=metric,
        metric_params=metric_params or {},
        optimization_run=optimization_run,
        created_by=user if getattr(user, "pk", None) is not None else None,
        status=RunStatus.SUCCEEDED,
        created_at=moment,
        started_at=moment,
        finished_at=moment,
        total=len(outcomes),
        done=len(outcomes),
        errors=failed,
        score=score,
        ci_low=ci_low,
        ci_high=ci_high,
        input_tokens=sum(outcome.input_tokens for outcome in outcomes),
        output_tokens=sum(outcome.output_tokens for outcome in outcomes),
    )
    EvaluationResult.objects.bulk_create(
        EvaluationResult(
            run=run,
            position=outcome.position,
            inputs=outcome.inputs,
            expected=outcome.expected,
            accepted=outcome.accepted,
            created_at=moment,
            **_result_fields(outcome),
        )
        for outcome in outcomes
    )
    _score_record(run)
    return run


def evaluation_cancel(*, run: EvaluationRun, now: Clock = timezone.now) -> EvaluationRun:
    """Cancel a run: a queued one at once, a running one at its next example (its results
    are kept). A finished run is left as it is."""
    return lifecycle.run_cancel(run=run, now=now)


# Reads ----------------------------------------------------------------------------------------


def evaluation_list(
    *, signature: str | None = None, status: str | None = None
) -> QuerySet[EvaluationRun]:
    """Runs, newest first, with what their list shows joined."""
    runs = EvaluationRun.objects.select_related(
        "signature_version__signature", "dataset", "provider", "created_by"
    )
    if signature:
        # A name the registry would never store (one with a NUL character would make
        # PostgreSQL refuse the query) names no signature: no runs.
        if name_problem(signature) is not None:
            return runs.none()
        runs = runs.filter(signature_version__signature__name=signature)
    if status:
        if status not in RunStatus.values:
            raise InvalidRequest(
                errors={
                    "status": field_error(
                        "invalid_choice",
                        f"{status!r} is not a status; choose one of {', '.join(RunStatus.values)}.",
                    )
                }
            )
        runs = runs.filter(status=status)
    return runs


def evaluation_get(*, run_id: Any) -> EvaluationRun:
    """A run by its id, as a URL or a command gives it (digits only)."""
    digits = str(run_id)
    run = None
    if digits.isascii() and digits.isdigit() and 0 < int(digits) < 2**63:
        run = evaluation_list().filter(pk=int(digits)).first()
    if run is None:
        raise EvaluationNotFound(f"No evaluation run {digits}.")
    return run


class ResultFilter:
    ALL = "all"
    WRONG = "wrong"
    ERROR = "error"
    CHOICES = (ALL, WRONG, ERROR)


def evaluation_results(*, run: EvaluationRun, show: str = ResultFilter.ALL) -> QuerySet:
    """A run's results by position: all, the `wrong` ones (score below 1, errors included),
    or the `error` ones."""
    results = EvaluationResult.objects.filter(run=run).order_by("position")
    if show == ResultFilter.WRONG:
        return results.filter(score__lt=1)
    if show == ResultFilter.ERROR:
        return results.exclude(error_code="")
    if show != ResultFilter.ALL:
        raise InvalidRequest(
            errors={
                "show": field_error(
                    "invalid_choice",
                    f"{show!r} is not a filter; choose one of {', '.join(ResultFilter.CHOICES)}.",
                )
            }
        )
    return results


def evaluation_progress(run: EvaluationRun, *, now: Clock = timezone.now) -> dict[str, Any]:
    """Done, total, errors, percent, seconds elapsed and the estimated seconds left (None
    until an example is done, and once the run has ended)."""
    percent = round(100 * run.done / run.total, 1) if run.total else 0.0
    elapsed_s = None
    if run.started_at is not None:
        elapsed_s = round(((run.finished_at or now()) - run.started_at).total_seconds(), 1)
    eta_s = None
    if run.status == RunStatus.RUNNING and run.done and elapsed_s is not None:
        eta_s = round(elapsed_s / run.done * (run.total - run.done), 1)
    return {
        "done": run.done,
        "total": run.total,
        "errors": run.errors,
        "percent": percent,
        "elapsed_s": elapsed_s,
        "eta_s": eta_s,
    }


@dataclass(frozen=True)
class ExampleDifference:
    """One example on which two runs differ (in score or in prediction)."""

    position: int
    inputs: dict[str, Any]
    expected: dict[str, Any]
    a_prediction: dict[str, Any] | None
    a_score: float | None
    a_error_code: str
    b_prediction: dict[str, Any] | None
    b_score: float | None
    b_error_code: str

    @property
    def change(self) -> str:
        """`better`, `worse` or `same` (score) from a to b."""
        a, b = self.a_score or 0.0, self.b_score or 0.0
        return "better" if b > a else "worse" if b < a else "same"


@dataclass(frozen=True)
class EvaluationComparison:
    a: EvaluationRun
    b: EvaluationRun
    compared: int
    better: int
    worse: int
    differences: list[ExampleDifference]
    differences_total: int


def evaluation_compare(
    *, a: EvaluationRun, b: EvaluationRun, limit: int | None = None
) -> EvaluationComparison:
    """Two runs on the same data (dataset content hash and split): both scores, and the
    examples (scored by both) where their prediction or score differs, by position; at most
    `limit` of them, with the count of all."""
    if a.dataset_hash != b.dataset_hash or a.split != b.split:
        raise EvaluationsNotComparable(
            f"Runs {a.pk} and {b.pk} did not run on the same data: {a.dataset.name} "
            f"({a.dataset_hash[:12]}) {a.split} against {b.dataset.name} "
            f"({b.dataset_hash[:12]}) {b.split}. Compare runs of one dataset content and split."
        )
    columns = ("position", "inputs", "expected", "prediction", "score", "error_code")
    theirs = {row[0]: row for row in EvaluationResult.objects.filter(run=b).values_list(*columns)}
    differences: list[ExampleDifference] = []
    compared = better = worse = total = 0
    for position, inputs, expected, prediction, score, error_code in (
        EvaluationResult.objects.filter(run=a).order_by("position").values_list(*columns).iterator()
    ):
        other = theirs.get(position)
        if other is None:
            continue
        compared += 1
        if prediction == other[3] and score == other[4]:
            continue
        difference = ExampleDifference(
            position=position,
            inputs=inputs,
            expected=expected,
            a_prediction=prediction,
            a_score=score,
            a_error_code=error_code,
            b_prediction=other[3],
            b_score=other[4],
            b_error_code=other[5],
        )
        total += 1
        better += difference.change == "better"
        worse += difference.change == "worse"
        if limit is None or len(differences) < limit:
            differences.append(difference)
    return EvaluationComparison(
        a=a,
        b=b,
        compared=compared,
        better=better,
        worse=worse,
        differences=differences,
        differences_total=total,
    )


def evaluation_comparable(*, run: EvaluationRun) -> QuerySet[EvaluationRun]:
    """Other runs on the same data as `run`, which it can be compared with."""
    return (
        evaluation_list().filter(dataset_hash=run.dataset_hash, split=run.split).exclude(pk=run.pk)
    )
