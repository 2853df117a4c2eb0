import json
from argparse import ArgumentTypeError
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from executions.models import Execution
from executions.selectors import execution_get, execution_wait
from executions.serializers import ExecutionSerializer
from executions.services.create import execution_create
from registry.field_types import RULES
from registry.selectors import signature_version_resolve


def _input_pair(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name.strip():
        raise ArgumentTypeError(f"expected NAME=VALUE, got {value!r}")
    return name.strip(), text


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return number


def _error_text(error: ApplicationError) -> str:
    """The service's message, then each field's problems, as the API would list them."""
    lines = [f"{error.message} ({error.code})"]
    for field, problems in error.errors.items():
        for problem in problems if isinstance(problems, list) else [problems]:
            message = problem.get("message") if isinstance(problem, dict) else problem
            lines.append(f"  {field}: {message}")
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Run a registered signature from the terminal, through the same services as "
        "POST /api/v1/dspy/execute (validation, queue, workers, breakers, fallback). Inputs "
        "come from --input name=value pairs (a value is read as its field's type: text for "
        "str and literal fields, JSON otherwise, e.g. 3, true, '[\"a\"]') and/or a JSON file. "
        "Sync (the default) waits and prints the outputs and metrics; --async prints the "
        "execution's id. The work runs on the django-q2 clusters, so they must be running."
    )

    def add_base_argument(self, parser, *args, **kwargs):
        # Here `--version` picks the signature's version; Django's own (its release) gives way.
        if "--version" not in args:
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("signature", help="The signature's name.")
        ref = parser.add_mutually_exclusive_group()
        ref.add_argument("--version", type=int, help="A version number (default: production).")
        ref.add_argument("--alias", help="An alias, e.g. production or staging.")
        parser.add_argument("--provider", help="A provider's name (default: the default one).")
        parser.add_argument(
            "--input",
            dest="inputs",
            action="append",
            type=_input_pair,
            default=[],
            metavar="NAME=VALUE",
            help="One input field; repeat for each (overrides the same field of --inputs-file).",
        )
        parser.add_argument(
            "--inputs-file", type=Path, help="A JSON file holding an object of inputs."
        )
        parser.add_argument(
            "--async",
            dest="run_async",
            action="store_true",
            help="Queue it, print its id and return without waiting.",
        )
        parser.add_argument(
            "--timeout",
            type=_positive_float,
            help="Seconds to wait in sync mode (default: EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S); "
            "the work goes on after it.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the execution as the API returns it."
        )

    def handle(self, *args, signature: str, version, alias, provider, **options):
        timeout = options["timeout"]
        if timeout is not None and timeout > settings.EXECUTIONS_MAX_TIMEOUT_S:
            raise CommandError(
                f"--timeout may be at most {settings.EXECUTIONS_MAX_TIMEOUT_S:g} seconds "
                "(EXECUTIONS_MAX_TIMEOUT_S)."
            )
        ref = version if version is not None else alias
        mode = Execution.Mode.ASYNC if options["run_async"] else Execution.Mode.SYNC
        try:
            inputs = self._inputs(
                signature=signature,
                ref=ref,
                pairs=options["inputs"],
                path=options["inputs_file"],
            )
            result = execution_create(
                signature=signature,
                version=ref,
                inputs=inputs,
                provider=provider,
                mode=mode,
                timeout_s=timeout,
            )
        except ApplicationError as error:
            raise CommandError(_error_text(error)) from error
        execution = result.execution
        if mode == Execution.Mode.ASYNC:
            execution = execution_get(execution_id=execution.id)
        else:
            wait = timeout if timeout is not None else settings.EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S
            execution = execution_wait(execution_id=execution.id, timeout_s=wait)
        if options["json"]:
            self.stdout.write(json.dumps(ExecutionSerializer(execution).data, indent=2))
        else:
            self._print(execution, waited=mode == Execution.Mode.SYNC)
        if execution.is_finished and not execution.success:
            raise CommandError(f"Execution {execution.id} ended {execution.status}.")

    def _inputs(
        self, *, signature: str, ref: int | str | None, pairs: list[tuple[str, str]], path
    ) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        if path is not None:
            try:
                inputs = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as error:
                raise CommandError(f"Cannot read {path}: {error}") from error
            except json.JSONDecodeError as error:
                raise CommandError(f"{path} is not JSON: {error}") from error
            if not isinstance(inputs, dict):
                raise CommandError(f"{path} must hold a JSON object of inputs.")
        if pairs:
            fields = {
                field["name"]: field
                for field in signature_version_resolve(name=signature, ref=ref).input_fields
            }
            for name, text in pairs:
                inputs[name] = _parse_value(fields.get(name), text)
        return inputs

    def _print(self, execution: Execution, *, waited: bool) -> None:
        self.stdout.write(f"execution: {execution.id}")
        self.stdout.write(f"status:    {execution.status}")
        if not execution.is_finished:
            if waited:
                self.stdout.write("Still running after the wait; the work goes on.")
            self.stdout.write(
                f"Poll it: GET /api/v1/executions/{execution.id} (or the admin's Executions)."
            )
            return
        if execution.outputs is not None:
            self.stdout.write("outputs:")
            for name, value in execution.outputs.items():
                self.stdout.write(f"  {name}: {json.dumps(value, ensure_ascii=False)}")
        if execution.error_code:
            self.stdout.write(f"error:     {execution.error_code}: {execution.error_message}")
        provider = execution.provider.name if execution.provider else "-"
        self.stdout.write(f"provider:  {provider} (requested {execution.requested_provider.name})")
        seconds = execution.execution_time_s
        self.stdout.write(f"time:      {seconds:.3f} s" if seconds is not None else "time:      -")
        self.stdout.write(
            f"tokens:    {_or_dash(execution.input_tokens)} in, "
            f"{_or_dash(execution.output_tokens)} out"
        )


def _parse_value(field: dict | None, text: str) -> Any:
    """A command-line value as its field's JSON value: text for text fields; JSON for the
    others, the text itself where it is not JSON (validation then says what was expected).
    An unknown field stays text; validation names it."""
    if field is None or RULES[field["type"]].python_type is str or RULES[field["type"]].has_choices:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _or_dash(value) -> str:
    return "-" if value is None else str(value)
