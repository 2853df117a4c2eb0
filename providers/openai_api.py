"""The OpenAI-compatible routes: `dspy.LM("openai/<provider>", api_base=.../api/v1/openai,
api_key=<API key>)` and the `openai` library use a provider of the toolkit unchanged.

`POST openai/chat/completions` takes the OpenAI chat-completions body and answers in the
OpenAI shape; errors keep the API's one shape (its `code` is what the `openai` library reads
as the error's `code`). `GET openai/models` lists the enabled providers as models. The key is
the toolkit's API key, sent as `Authorization: Bearer <key>` (or `Api-Key <key>`).
"""

import uuid
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.authentication import (
    APIKeyAuthentication,
    BearerAPIKeyAuthentication,
    StaffSessionAuthentication,
)
from core.api.schema import error_response
from core.errors import field_error
from providers.chat import CHAT_ROLES, FINISH_REASONS, ChatCompletion, provider_chat
from providers.exceptions import ChatStreamingNotSupported, ChatUnsupportedParameter
from providers.selectors import provider_list

# The `openai` library sends the key this way; Api-Key and a staff session work as elsewhere.
# Api-Key first: it names the scheme of a 401's WWW-Authenticate, as on every other route.
OPENAI_AUTHENTICATION = [
    APIKeyAuthentication,
    BearerAPIKeyAuthentication,
    StaffSessionAuthentication,
]
MAX_MESSAGES = 256
# OpenAI's name for the system role in newer models; DSPy sends it with `use_developer_role`.
DEVELOPER_ROLE = "developer"
OWNED_BY = "dspy-toolkit"


class BearerAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "core.api.authentication.BearerAPIKeyAuthentication"
    name = "BearerApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The toolkit's API key as a bearer token, as OpenAI clients send "
            "their key (`api_key=<key>`).",
        }


_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    "required": ["type", "text"],
}


@extend_schema_field(
    {
        "oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART, "minItems": 1}],
        "description": "The message's text, or a list of text parts (joined).",
    }
)
class ContentField(serializers.Field):
    """A message's content: a string, or OpenAI's list of text parts, joined into one string
    (images and audio are refused: no provider of the toolkit reads them)."""

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str):
            return data
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError(
                "Expected a string or a non-empty list of text parts.", code="wrong_type"
            )
        texts = []
        for part in data:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise serializers.ValidationError(
                    'Only text parts ({"type": "text", "text": ...}) are supported.',
                    code="unsupported_content",
                )
            if not isinstance(part.get("text"), str):
                raise serializers.ValidationError(
                    "A text part's text must be a string.", code="wrong_type"
                )
            texts.append(part["text"])
        return "".join(texts)

    def to_representation(self, value: str) -> str:
        return value


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        ],
        "description": "A stop sequence, or a list of them (checked against the bounds of "
        "every generation setting).",
    }
)
class StopField(serializers.JSONField):
    """Checked by the service with the other generation settings (`core.generation`)."""


class ChatMessageSerializer(serializers.Serializer):
    """One message of the conversation; keys other than these are refused (`unknown_field`):
    tool calls and tool results are not supported."""

    role = serializers.ChoiceField(choices=[*CHAT_ROLES, DEVELOPER_ROLE])
    content = ContentField()
    name = serializers.CharField(
        required=False, max_length=64, help_text="Accepted and ignored, as most servers do."
    )

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {
                        str(name): field_error(
                            "unknown_field", "Unknown key; a message has role, content and name."
                        )
                        for name in unknown
                    }
                )
        message = super().to_internal_value(data)
        role = "system" if message["role"] == DEVELOPER_ROLE else message["role"]
        # DSPy refuses an empty system prompt before any provider is called.
        if role == "system" and not message["content"]:
            raise serializers.ValidationError(
                {"content": field_error("blank", "A system message needs some text.")}
            )
        return {"role": role, "content": message["content"]}


class ChatCompletionRequestSerializer(serializers.Serializer):
    """The OpenAI chat-completions body. `model` names a provider of the toolkit. Fields not
    listed here (`user`, `seed`, `metadata`, penalties, ...) are accepted and ignored, as
    OpenAI clients send some by default; those that would change the answer's shape (`tools`,
    `functions`, `response_format` other than text, `logprobs`, `n` above 1, `stream`) are
    refused."""

    model = serializers.CharField(max_length=100, help_text="The name of an enabled provider.")
    messages = serializers.ListField(
        child=ChatMessageSerializer(), min_length=1, max_length=MAX_MESSAGES
    )
    temperature = serializers.FloatField(required=False, allow_null=True)
    top_p = serializers.FloatField(required=False, allow_null=True)
    max_tokens = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="At most the server's `EXECUTIONS_MAX_TOKENS_LIMIT`.",
    )
    max_completion_tokens = serializers.IntegerField(
        required=False, allow_null=True, help_text="OpenAI's newer name of `max_tokens` (wins)."
    )
    stop = StopField(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True, help_text="Only 1.")
    stream = serializers.BooleanField(
        required=False, allow_null=True, help_text="Only false: streaming is not supported."
    )
    logprobs = serializers.BooleanField(required=False, allow_null=True, help_text="Only false.")
    tools = serializers.ListField(
        child=serializers.DictField(), required=False, allow_null=True, help_text="Not supported."
    )
    functions = serializers.ListField(
        child=serializers.DictField(), required=False, allow_null=True, help_text="Not supported."
    )
    response_format = serializers.DictField(
        required=False, allow_null=True, help_text='Only {"type": "text"}.'
    )

    def validate_messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if all(message["role"] == "system" for message in messages):
            raise serializers.ValidationError(
                "At least one user or assistant message is needed.", code="no_conversation"
            )
        return messages

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        problems: dict[str, list[dict[str, str]]] = {}
        if attrs.get("stream"):
            problems["stream"] = field_error(
                "streaming_not_supported", "Streaming is not supported; send stream: false."
            )
        if attrs.get("n") not in (None, 1):
            problems["n"] = field_error("unsupported", "Only one choice (n: 1) is supported.")
        if attrs.get("logprobs"):
            problems["logprobs"] = field_error("unsupported", "Log probabilities are not returned.")
        for name in ("tools", "functions"):
            if attrs.get(name):
                problems[name] = field_error(
                    "unsupported", "Tool and function calling are not supported."
                )
        response_format = attrs.get("response_format")
        if response_format is not None and response_format.get("type") != "text":
            problems["response_format"] = field_error(
                "unsupported", 'Only {"type": "text"} is supported (no JSON mode or schema).'
            )
        if "stream" in problems:
            raise ChatStreamingNotSupported(errors=problems)
        if problems:
            raise ChatUnsupportedParameter(errors=problems)
        return attrs

    def generation_config(self) -> dict[str, Any]:
        """The generation settings the request sets (nulls are unset)."""
        data = self.validated_data
        max_tokens = data.get("max_completion_tokens")
        config = {
            "temperature": data.get("temperature"),
            "top_p": data.get("top_p"),
            "max_tokens": data.get("max_tokens") if max_tokens is None else max_tokens,
            "stop": data.get("stop"),
        }
        return {key: value for key, value in config.items() if value is not None}


class ChatResponseMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["assistant"])
    content = serializers.CharField()


class ChatChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message = ChatResponseMessageSerializer()
    finish_reason = serializers.ChoiceField(
        choices=FINISH_REASONS, help_text="`length` when generation stopped at max_tokens."
    )


class ChatUsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class ChatCompletionSerializer(serializers.Serializer):
    """The OpenAI chat-completion shape; `model` is the provider that answered (the requested
    one, or a fallback of it)."""

    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["chat.completion"])
    created = serializers.IntegerField(help_text="Unix time, in seconds.")
    model = serializers.CharField()
    choices = ChatChoiceSerializer(many=True)
    usage = ChatUsageSerializer()


def _completion_body(completion: ChatCompletion) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(completion.created_at.timestamp()),
        "model": completion.provider,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.content},
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": completion.input_tokens,
            "completion_tokens": completion.output_tokens,
            "total_tokens": completion.input_tokens + completion.output_tokens,
        },
    }


_REQUEST_EXAMPLE = {
    "model": "local-default",
    "messages": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0.0,
    "max_tokens": 16,
}
_COMPLETION_EXAMPLE = {
    "id": "chatcmpl-5f0c8e2a9b1d4c3e8f7a6b5c4d3e2f1a",
    "object": "chat.completion",
    "created": 1767607200,
    "model": "local-default",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 24, "completion_tokens": 2, "total_tokens": 26},
}


class ChatCompletionsApi(APIView):
    """Run a chat completion on a provider, OpenAI-compatible."""

    authentication_classes = OPENAI_AUTHENTICATION
    serializer_class = ChatCompletionRequestSerializer

    @extend_schema(
        operation_id="openai_chat_completions",
        summary="Chat completion on a provider (OpenAI-compatible)",
        description=(
            'The OpenAI chat-completions call, so that `dspy.LM("openai/<provider>", '
            'api_base="<server>/api/v1/openai", api_key=<API key>)` or the `openai` library '
            "uses a provider of the toolkit: `model` names the provider, whose fallback chain, "
            "circuit breakers and metrics apply as for an execution; a local model runs in the "
            "inference workers. The messages go to the model as they are (no signature, no "
            "adapter) and nothing is recorded as an execution. Not supported: streaming, "
            "tools and functions, JSON mode, log probabilities, more than one choice."
        ),
        request=ChatCompletionRequestSerializer,
        responses={
            200: OpenApiResponse(ChatCompletionSerializer, description="The model's answer."),
            400: error_response(
                "The body is invalid, asks for something unsupported (`streaming_not_supported`,"
                " `unsupported_parameter`), sets generation settings out of bounds "
                "(`invalid_config`), names a disabled provider, or the provider refused the "
                "request itself (`provider_rejected_request`)."
            ),
            404: error_response("No provider has this name (`provider_not_found`)."),
            502: error_response("Every provider tried failed (`providers_exhausted`)."),
            503: error_response(
                "Every provider's circuit breaker is open (`circuit_open`); see `Retry-After`."
            ),
            504: error_response(
                "No provider answered in time, or the inference workers did not take the call "
                "in time (`providers_timed_out`)."
            ),
        },
        examples=[
            OpenApiExample("A question", request_only=True, value=_REQUEST_EXAMPLE),
            OpenApiExample(
                "The answer", response_only=True, status_codes=["200"], value=_COMPLETION_EXAMPLE
            ),
        ],
        tags=["openai"],
    )
    def post(self, request):
        serializer = ChatCompletionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        completion = provider_chat(
            model=data["model"], messages=data["messages"], config=serializer.generation_config()
        )
        return Response(ChatCompletionSerializer(_completion_body(completion)).data)


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The provider's name: what `model` takes.")
    object = serializers.ChoiceField(choices=["model"])
    created = serializers.IntegerField(help_text="Unix time the provider was created.")
    owned_by = serializers.CharField()


class ModelListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = ModelSerializer(many=True)


class ModelsApi(APIView):
    """List the enabled providers as OpenAI models."""

    authentication_classes = OPENAI_AUTHENTICATION

    @extend_schema(
        operation_id="openai_models",
        summary="List the providers as models (OpenAI-compatible)",
        description=(
            "The enabled providers, in the OpenAI model-list shape: each `id` is a `model` the "
            "chat-completions route takes."
        ),
        responses={200: ModelListSerializer},
        tags=["openai"],
    )
    def get(self, request):
        models = [
            {
                "id": provider.name,
                "object": "model",
                "created": int(provider.created_at.timestamp()),
                "owned_by": OWNED_BY,
            }
            for provider in provider_list(enabled=True)
        ]
        return Response(ModelListSerializer({"object": "list", "data": models}).data)
