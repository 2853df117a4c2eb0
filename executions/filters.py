"""Query filters of the executions list."""

import django_filters

from core.api.filters import UtcIsoDateTimeFilter
from executions.models import Execution, FailureCause


class ExecutionFilter(django_filters.FilterSet):
    signature = django_filters.CharFilter(
        field_name="signature_version__signature__name", help_text="Signature name."
    )
    version = django_filters.NumberFilter(
        field_name="signature_version__number", help_text="Signature version number."
    )
    status = django_filters.MultipleChoiceFilter(
        choices=Execution.Status.choices, help_text="One or more statuses (repeat the parameter)."
    )
    provider = django_filters.CharFilter(
        field_name="provider__name", help_text="The provider that answered (after fallback)."
    )
    requested_provider = django_filters.CharFilter(
        field_name="requested_provider__name", help_text="The provider the request chose."
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
