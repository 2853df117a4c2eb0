"""Errors the providers app raises to other apps; each is a `core.errors.ApplicationError`
with its machine-readable `code` and HTTP status.

Failures of a language model call itself are DSPy's own `LMError` family and
`AdapterParseError`, which propagate unchanged so callers can classify them.
"""

import dspy

from core.errors import ApplicationError, Conflict, InvalidRequest, NotFound, ServiceUnavailable


class ProviderError(ApplicationError):
    code = "provider_error"


class ProviderNotFound(ProviderError, NotFound):
    code = "provider_not_found"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"No provider named {name!r}.")


class NoProviderConfigured(ProviderError, ServiceUnavailable):
    code = "no_provider_configured"
    default_message = (
        "No enabled provider is configured: run `manage.py providers_install_default_model` "
        "or add one in the admin."
    )


class ProviderDisabled(ProviderError, InvalidRequest):
    code = "provider_disabled"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"The provider {name!r} is disabled.",
            errors={"provider": [{"code": self.code, "message": "This provider is disabled."}]},
        )


class ProviderInUse(ProviderError, Conflict):
    code = "provider_in_use"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"The provider {name!r} is referenced by recorded executions and cannot be deleted; "
            "disable it instead."
        )


class LMMalformedResponseError(dspy.LMServerError):
    """An OpenAI-compatible endpoint answered with a body that is not the JSON it promised.

    DSPy reports this as a bare `LMProviderError`; it is the server's (or a proxy's) fault and
    as transient as an HTTP 5xx, so it is a server error for breakers and retry policies.
    """

    default_code = "malformed_response"


# The OpenAI-compatible chat route (providers/chat.py).


class ChatError(ServiceUnavailable):
    """No provider of the chain answered; the statuses below say why."""

    code = "chat_failed"
    retry_after_s = 5


class ChatCircuitOpen(ChatError):
    code = "circuit_open"
    status_code = 503


class ChatProvidersExhausted(ChatError):
    code = "providers_exhausted"
    # The toolkit is a gateway here: its upstreams failed.
    status_code = 502


class ChatProvidersTimedOut(ChatError):
    code = "providers_timed_out"
    status_code = 504


class ChatInvalidConfig(InvalidRequest):
    code = "invalid_config"

    def __init__(self, errors: dict[str, list[dict[str, str]]]) -> None:
        fields = ", ".join(sorted(errors))
        super().__init__(f"The generation settings are invalid ({fields}).", errors=errors)


class ChatStreamingNotSupported(InvalidRequest):
    code = "streaming_not_supported"
    default_message = "Streaming is not supported: send `stream: false` (or leave it out)."


class ChatUnsupportedParameter(InvalidRequest):
    """A setting that would change the answer's shape (tools, JSON mode, several choices), which
    no provider of the toolkit is asked to honour."""

    code = "unsupported_parameter"
    default_message = "The request asks for something this route does not support; see `errors`."


class ChatRequestRejected(InvalidRequest):
    """A provider refused the request itself (a prompt longer than its context window, a
    setting it rejects): another provider would refuse it too."""

    code = "provider_rejected_request"
