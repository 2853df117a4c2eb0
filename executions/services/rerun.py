"""Re-running an execution: a new execution of the same request, linked to the original.

The original is a record and stays as it is; the re-run goes through `execution_create` like
any request, so validation, admission (queue shares, load shedding) and queueing apply, and it
runs asynchronously.
"""

from executions.models import Execution
from executions.services.create import ExecutionCreateResult, execution_create


def execution_rerun(
    *,
    execution: Execution,
    provider: str | None = None,
    version: int | str | None = None,
    api_key=None,
    user=None,
) -> ExecutionCreateResult:
    """Queue a new execution of `execution`'s signature with its inputs and the generation
    settings it ran with, on `provider` (default: the provider it requested) at `version` (a
    number or an alias; default: the version it ran), for the client that asks (`api_key`, or
    `user` for a session), with `rerun_of` pointing at the original.

    Raises what `execution_create` raises: an unknown provider or version, a disabled
    provider, inputs that do not fit another version, a full queue.
    """
    original = execution.signature_version
    return execution_create(
        signature=original.signature.name,
        version=original.number if version is None else version,
        inputs=execution.inputs,
        config=execution.config,
        provider=provider or execution.requested_provider.name,
        mode=Execution.Mode.ASYNC,
        timeout_s=execution.timeout_s,
        api_key=api_key,
        user=user,
        rerun_of=execution,
    )
