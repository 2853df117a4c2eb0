"""Query filters of the executions list.

A filter by name (signature, provider) is resolved to the ids it stands for before the list is
queried: with the ids in the query, PostgreSQL estimates from its statistics how many
executions match and reads them newest first through one of the list's indexes
(`Execution.Meta.indexes`), stopping after a page. Joined by name instead, it cannot know,
starts from the named row and sorts every matching execution, a cost that grows with the
table.
"""

import django_filters
from django.db.models import QuerySet

from core.api.filters import UtcIsoDateTimeFilter
from executions.models import Execution, FailureCause
from providers.models import Provider
from registry.models import SignatureVersion


def _provider_ids(name: str) -> list[int]:
    return list(Provider.objects.filter(name=name).values_list("id", flat=True))


class ExecutionFilter(django_filters.FilterSet):
    signature = django_filters.CharFilter(method="filter_signature", help_text="Signature name.")
    version = django_filters.NumberFilter(
        field_name="signature_version__number", help_text="Signature version number."
    )
    # No DISTINCT: each filters a column of the execution itself, so no row can repeat, and a
    # DISTINCT would sort every matching row (all their columns) before the page is cut.
    status = django_filters.MultipleChoiceFilter(
        choices=Execution.Status.choices,
        distinct=False,
        help_text="One or more statuses (repeat the parameter).",
    )
    provider = django_filters.CharFilter(
        method="filter_provider", help_text="The provider that answered (after fallback)."
    )
    requested_provider = django_filters.CharFilter(
        method="filter_requested_provider", help_text="The provider the request chose."
    )
    queued_after = UtcIsoDateTimeFilter(
        field_name="queued_at", lookup_expr="gte", help_text="Queued at or after (ISO 8601)."
    )
    queued_before = UtcIsoDateTimeFilter(
        field_name="queued_at", lookup_expr="lt", help_text="Queued before (ISO 8601)."
    )
    batch = django_filters.UUIDFilter(field_name="batch_id", help_text="Batch id.")
    cause = django_filters.MultipleChoiceFilter(
        field_name="error_cause",
        choices=FailureCause.choices,
        distinct=False,
        help_text="One or more root causes of failure (repeat the parameter).",
    )
    rerun_of = django_filters.UUIDFilter(
        field_name="rerun_of_id", help_text="The re-runs of this execution."
    )

    class Meta:
        model = Execution
        fields = [
            "signature",
            "version",
            "status",
            "provider",
            "requested_provider",
            "queued_after",
            "queued_before",
            "batch",
            "cause",
            "rerun_of",
        ]

    def filter_signature(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        versions = SignatureVersion.objects.filter(signature__name=value)
        return queryset.filter(signature_version__in=list(versions.values_list("id", flat=True)))

    def filter_provider(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(provider__in=_provider_ids(value))

    def filter_requested_provider(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(requested_provider__in=_provider_ids(value))
