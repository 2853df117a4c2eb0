"""A Python client of DSPy Toolkit: run registered signatures like local DSPy programs.

It depends on httpx and dspy only (never on Django), so any program can use it.
"""

from dspy_toolkit_client.client import AsyncRemoteSignature, AsyncToolkit, RemoteSignature, Toolkit
from dspy_toolkit_client.errors import (
    AuthenticationError,
    ConflictError,
    ConnectionFailed,
    ExecutionFailed,
    ExecutionTimeout,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ToolkitError,
    UnavailableError,
)
from dspy_toolkit_client.prediction import ToolkitPrediction

__all__ = [
    "AsyncRemoteSignature",
    "AsyncToolkit",
    "AuthenticationError",
    "ConflictError",
    "ConnectionFailed",
    "ExecutionFailed",
    "ExecutionTimeout",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RemoteSignature",
    "ServerError",
    "Toolkit",
    "ToolkitError",
    "ToolkitPrediction",
    "UnavailableError",
]
