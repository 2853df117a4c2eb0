"""Request and response serializers of the executions API.

Request serializers check a request's shape (types, bounds, unknown keys); what a request
means (the signature's inputs, the generation config, the provider) is checked by the
services.
"""

from django.conf import settings
from django.urls import reverse
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer, inline_serializer
from rest_framework import exceptions, serializers

from core import generation
from core.api.schema import ErrorSerializer, JSONObjectField, RuntimeSchemaField
from executions.models import Execution, ExecutionAttempt, FailureCause
from executions.selectors import execution_attempts

_NUMBER = {"type": "number", "format": "double"}
_STOP = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "maxItems": generation.STOP_SEQUENCES_MAX,
        },
    ],
    "description": "A stop sequence, or a list of them.",
}


class GenerationConfigField(RuntimeSchemaField, serializers.JSONField):
    """The request's generation settings; the services check them (`core.generation`), with
    `max_tokens` at most the `EXECUTIONS_MAX_TOKENS_LIMIT` setting."""

    def openapi_schema(self, auto_schema, direction):
        return {
            "type": "object",
            "properties": {
                "temperature": _NUMBER
                | {"minimum": generation.TEMPERATURE_MIN, "maximum": generation.TEMPERATURE_MAX},
                "top_p": _NUMBER
                | {"minimum": generation.TOP_P_MIN, "maximum": generation.TOP_P_MAX},
                "max_tokens": {
                    "type": "integer",
                    "minimum": generation.MAX_TOKENS_MIN,
                    "maximum": settings.EXECUTIONS_MAX_TOKENS_LIMIT,
                    "description": "At most the server's `EXECUTIONS_MAX_TOKENS_LIMIT` setting.",
                },
                "stop": _STOP,
            },
            "additionalProperties": False,
        }


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "temperature": _NUMBER,
            "top_p": _NUMBER,
            "max_tokens": {"type": "integer"},
            "stop": {"type": "array", "items": {"type": "string"}},
        },
        "description": "The generation settings it ran with: the version's LM defaults "
        "overridden by the request's `config`.",
    }
)
class ExecutionConfigField(serializers.JSONField):
    """The settings an execution ran with, as stored: no bound is documented, since the limits
    in force then may not be the ones in force now."""


class TimeoutField(RuntimeSchemaField, serializers.FloatField):
    """Seconds, more than 0 and at most the `EXECUTIONS_MAX_TIMEOUT_S` setting (checked by the
    serializer that declares it).

    A negative value is refused here, as `min_value=0` would, but without its validator: that
    would document `minimum: 0` and hide the exclusive bound.
    """

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value < 0:
            self.fail("min_value", min_value=0.0)
        return value

    def openapi_schema(self, auto_schema, direction):
        return _NUMBER | {
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": settings.EXECUTIONS_MAX_TIMEOUT_S,
            "description": (
                "How long a sync request waits (seconds) before answering 202: more than 0 and "
                "at most the `EXECUTIONS_MAX_TIMEOUT_S` setting. Omitted or null: the "
                "`EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S` setting, "
                f"{settings.EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S:g} s on this server."
            ),
        }


class BatchItemsField(RuntimeSchemaField, serializers.ListField):
    """The batch's items, each checked on its own (`ExecutionItemSerializer`) by the view; at
    most the `EXECUTIONS_BATCH_MAX_ITEMS` setting."""

    def openapi_schema(self, auto_schema, direction):
        item = auto_schema.resolve_serializer(ExecutionItemSerializer, direction)
        return {
            "type": "array",
            "items": item.ref,
            "minItems": 1,
            "maxItems": settings.EXECUTIONS_BATCH_MAX_ITEMS,
            "description": (
                "Execute requests (signature, version, inputs, config, provider): at most the "
                "`EXECUTIONS_BATCH_MAX_ITEMS` setting."
            ),
        }


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "minLength": 1, "maxLength": 100},
        ],
        "nullable": True,
        "description": (
            "A version number or an alias name (`production`, `latest`, ...). Omitted: the "
            "`production` alias when set, else the latest version."
        ),
    }
)
class VersionRefField(serializers.Field):
    default_error_messages = {
        "invalid": "Give a version number (an integer from 1) or an alias name (a string).",
    }

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("invalid")
        if isinstance(data, int) and data < 1:
            self.fail("invalid")
        if isinstance(data, str) and not 0 < len(data) <= 100:
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class StrictFieldsMixin:
    """Unknown keys in a request are mistakes (a typo silently ignored would run the wrong
    request), so they are rejected with the code `unknown_field` (documented as
    `additionalProperties: false`)."""

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {
                    name: [
                        exceptions.ErrorDetail(
                            f"Unknown field; the fields are {', '.join(self.fields)}.",
                            code="unknown_field",
                        )
                    ]
                    for name in unknown
                }
            )
        return super().validate(attrs)


class StrictFieldsSchema(OpenApiSerializerExtension):
    target_class = StrictFieldsMixin
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


class ExecutionItemSerializer(StrictFieldsMixin, serializers.Serializer):
    """What to run: a registered signature (at a version), its inputs, and optionally the
    generation settings and the provider. Unknown keys are refused (`unknown_field`)."""

    signature = serializers.CharField(max_length=100, help_text="Registered signature name.")
    version = VersionRefField(required=False, allow_null=True, default=None)
    inputs = JSONObjectField(
        help_text=(
            "One value per input field of the version, keyed by field name, of the field's "
            "type (`str`, `int`, `float`, `bool`, `list[str]`, `dict`, or one of a `literal`'s "
            "choices)."
        )
    )
    config = GenerationConfigField(
        required=False,
        default=dict,
        help_text=(
            "Generation settings: temperature (0-2), max_tokens, top_p (0-1), stop. Override "
            "the version's LM defaults."
        ),
    )
    provider = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        max_length=100,
        help_text="Provider name; omitted: the default provider.",
    )


class _WaitFieldsSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=Execution.Mode.choices,
        default=Execution.Mode.SYNC,
        help_text="sync: wait for the result up to timeout_s; async: return at once.",
    )
    timeout_s = TimeoutField(required=False, allow_null=True, default=None)

    def validate_timeout_s(self, value):
        limit = settings.EXECUTIONS_MAX_TIMEOUT_S
        if value is not None and not 0 < value <= limit:
            raise serializers.ValidationError(
                f"Must be more than 0 and at most {limit:g} seconds.", code="out_of_range"
            )
        return value


@extend_schema_serializer(component_name="Execute")
class ExecuteRequestSerializer(ExecutionItemSerializer, _WaitFieldsSerializer):
    """Run a registered signature: what to run, and how long to wait for it. Unknown keys
    are refused (`unknown_field`)."""


@extend_schema_serializer(component_name="ExecuteBatch")
class BatchRequestSerializer(StrictFieldsMixin, _WaitFieldsSerializer):
    """Several executions at once, and how long to wait for them. Unknown keys are refused
    (`unknown_field`); each item is checked on its own, so a bad item refuses only itself."""

    items = BatchItemsField(child=serializers.JSONField(), allow_empty=False)

    def validate_items(self, value):
        limit = settings.EXECUTIONS_BATCH_MAX_ITEMS
        if len(value) > limit:
            raise serializers.ValidationError(
                f"A batch holds at most {limit} items; this one has {len(value)}.",
                code="too_many_items",
            )
        return value


@extend_schema_field({"type": "string", "enum": FailureCause.values, "nullable": True})
class CauseField(serializers.CharField):
    """A failure cause (`FailureCause`), or null where nothing failed."""

    def to_representation(self, value):
        return value or None


@extend_schema_serializer(component_name="Rerun")
class RerunRequestSerializer(StrictFieldsMixin, serializers.Serializer):
    """Run an execution again, as a new execution: optionally on another provider or at
    another version. Unknown keys are refused (`unknown_field`)."""

    provider = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        max_length=100,
        help_text="Provider name; omitted: the provider the original requested.",
    )
    version = VersionRefField(required=False, allow_null=True, default=None)


class ExecutionAttemptSerializer(serializers.Serializer):
    run = serializers.IntegerField(help_text="The execution's claim this call belongs to.")
    position = serializers.IntegerField(help_text="Order within the run (0 first).")
    provider = serializers.CharField(source="provider.name")
    outcome = serializers.ChoiceField(choices=ExecutionAttempt.Outcome.choices)
    error_type = serializers.CharField(help_text="Empty when the call succeeded.")
    error_code = serializers.CharField(help_text="Empty when the call succeeded.")
    error_message = serializers.CharField(help_text="Empty when the call succeeded.")
    cause = CauseField(help_text="Why it failed (null when the call succeeded).")
    counted_by_breaker = serializers.BooleanField()
    started_at = serializers.DateTimeField()
    duration_s = serializers.FloatField()


class ExecutionSerializer(serializers.ModelSerializer):
    signature = serializers.CharField(source="signature_version.signature.name")
    version = serializers.IntegerField(source="signature_version.number")
    requested_provider = serializers.CharField(source="requested_provider.name")
    provider = serializers.CharField(
        source="provider.name",
        allow_null=True,
        help_text="The provider that answered, after fallback; null until one has.",
    )
    inputs = JSONObjectField(read_only=True, help_text="The inputs, as requested.")
    config = ExecutionConfigField(read_only=True)
    outputs = JSONObjectField(
        read_only=True,
        allow_null=True,
        help_text="One value per output field of the version; null until it succeeded.",
    )
    error = serializers.SerializerMethodField()
    timings = serializers.SerializerMethodField()
    metrics = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField(help_text="Where to poll this execution.")
    rerun_of = serializers.UUIDField(
        source="rerun_of_id",
        allow_null=True,
        help_text="The execution this one runs again; null when it is not a re-run.",
    )

    class Meta:
        model = Execution
        fields = [
            "id",
            "url",
            "status",
            "mode",
            "signature",
            "version",
            "requested_provider",
            "provider",
            "inputs",
            "config",
            "outputs",
            "error",
            "timings",
            "metrics",
            "attempts",
            "batch_id",
            "rerun_of",
        ]
        read_only_fields = fields

    @extend_schema_field(
        inline_serializer(
            "ExecutionError",
            {
                "type": serializers.CharField(),
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "cause": CauseField(help_text="The root cause of the failure."),
            },
            allow_null=True,
        )
    )
    def get_error(self, execution: Execution) -> dict | None:
        if not execution.error_code:
            return None
        return {
            "type": execution.error_type,
            "code": execution.error_code,
            "message": execution.error_message,
            "cause": execution.error_cause or None,
        }

    @extend_schema_field(
        inline_serializer(
            "ExecutionTimings",
            {
                "queued_at": serializers.DateTimeField(),
                "started_at": serializers.DateTimeField(allow_null=True),
                "finished_at": serializers.DateTimeField(allow_null=True),
            },
        )
    )
    def get_timings(self, execution: Execution) -> dict:
        field = serializers.DateTimeField()
        return {
            name: field.to_representation(value) if value else None
            for name, value in (
                ("queued_at", execution.queued_at),
                ("started_at", execution.started_at),
                ("finished_at", execution.finished_at),
            )
        }

    @extend_schema_field(
        inline_serializer(
            "ExecutionMetrics",
            {
                "execution_time_s": serializers.FloatField(allow_null=True),
                "input_tokens": serializers.IntegerField(allow_null=True),
                "output_tokens": serializers.IntegerField(allow_null=True),
                "memory_mb": serializers.FloatField(allow_null=True),
                "success": serializers.BooleanField(allow_null=True),
            },
        )
    )
    def get_metrics(self, execution: Execution) -> dict:
        return {
            "execution_time_s": execution.execution_time_s,
            "input_tokens": execution.input_tokens,
            "output_tokens": execution.output_tokens,
            "memory_mb": execution.memory_mb,
            "success": execution.success,
        }

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, execution: Execution) -> str:
        return _execution_url(self.context.get("request"), execution)


class ExecutionDetailSerializer(ExecutionSerializer):
    provider_attempts = serializers.SerializerMethodField(
        help_text="Every provider call of every run, in order (fallback and breaker refusals)."
    )

    class Meta(ExecutionSerializer.Meta):
        fields = [*ExecutionSerializer.Meta.fields, "provider_attempts"]
        read_only_fields = fields

    @extend_schema_field(ExecutionAttemptSerializer(many=True))
    def get_provider_attempts(self, execution: Execution) -> list[dict]:
        return ExecutionAttemptSerializer(execution_attempts(execution=execution), many=True).data


def _execution_url(request, execution: Execution) -> str:
    path = reverse("execution-detail", kwargs={"id": execution.id})
    return request.build_absolute_uri(path) if request is not None else path


class BatchItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="The item's position in the request.")
    execution = ExecutionSerializer(required=False, help_text="The accepted item's execution.")
    error = ErrorSerializer(required=False, help_text="Why the item was refused.")
    status = serializers.IntegerField(
        required=False, help_text="The HTTP status a refused item would have had on its own."
    )


class BatchResultSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    items = BatchItemResultSerializer(many=True)
