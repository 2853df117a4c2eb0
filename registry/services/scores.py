"""Scores of versions: recorded by evaluation runs and by the template library, read by
promotion and shown in the admin."""

from django.db.models import QuerySet

from registry.models import Dataset, SignatureVersion, VersionScore


def version_score_record(
    *,
    version: SignatureVersion,
    dataset: Dataset | None,
    dataset_hash: str,
    split: str,
    metric: str,
    score: float,
    examples: int,
    source: str,
    provider_name: str = "",
    model: str = "",
    ci_low: float | None = None,
    ci_high: float | None = None,
    reference: str = "",
) -> VersionScore:
    return VersionScore.objects.create(
        signature_version=version,
        dataset=dataset,
        dataset_hash=dataset_hash,
        split=split,
        metric=metric,
        score=score,
        examples=examples,
        source=source,
        provider_name=provider_name,
        model=model,
        ci_low=ci_low,
        ci_high=ci_high,
        reference=reference,
    )


def version_scores(*, version: SignatureVersion) -> QuerySet[VersionScore]:
    """A version's scores, newest first."""
    return VersionScore.objects.filter(signature_version=version).order_by("-recorded_at", "-id")


def version_score_latest(
    *, version: SignatureVersion, dataset_hash: str, split: str, metric: str
) -> VersionScore | None:
    """The newest score of a version on exactly this data (same content hash) and metric."""
    return (
        version_scores(version=version)
        .filter(dataset_hash=dataset_hash, split=split, metric=metric)
        .first()
    )
