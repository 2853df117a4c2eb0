"""Errors the providers app raises to other apps; each carries a machine-readable `code`.

Failures of a language model call itself are DSPy's own `LMError` family and
`AdapterParseError`, which propagate unchanged so callers can classify them.
"""

import dspy


class ProviderError(Exception):
    code = "provider_error"


class ProviderNotFound(ProviderError):
    code = "provider_not_found"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"No provider named {name!r}.")


class NoProviderConfigured(ProviderError):
    code = "no_provider_configured"

    def __init__(self) -> None:
        super().__init__(
            "No enabled provider is configured: run `manage.py providers_install_default_model` "
            "or add one in the admin."
        )


class ProviderDisabled(ProviderError):
    code = "provider_disabled"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"The provider {name!r} is disabled.")


class ProviderInUse(ProviderError):
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
