"""A DSPy adapter for small local models, which cannot follow DSPy's long standard prompts.

Measured with SmolLM2-135M: ChatAdapter (and its JSON fallback) never produced parseable
output, while a compact prompt answered correctly. The compact prompt is

    system:    one short line: the instructions, then what each output must look like
    user:      `name: value`, one line per input field
    assistant: pre-filled with `first_output:`, which the model continues

Outputs are generated field by field, and the field names are written by the adapter, never
by the model: for each output field the assistant turn is pre-filled with the fields already
generated and the next field's name, and generation stops at the line break. The engine
receives the pre-fill as a final assistant message (see `providers.engines.request_messages`).
"""

import json
import re
import types
from typing import Any, Literal, Union, get_args, get_origin

import dspy
import pydantic
from dspy.adapters.utils import parse_value
from dspy.clients._deprecation import adapter_message_call
from dspy.signatures.signature import Signature
from dspy.utils.exceptions import AdapterParseError

# Token budgets per field, below the LM's max_tokens: enough for a label, a number or a yes/no
# with some slack, and for one line of text. A small model that does not stop tends to repeat
# itself until the budget runs out (measured: 512 tokens of loops took 54 s), so a value that
# must fit on one line gets one line's worth.
SHORT_VALUE_MAX_TOKENS = 16
LINE_MAX_TOKENS = 128

NUMBER_WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
TRUE_WORDS = {"yes", "true", "y", "1", "correct", "right"}
FALSE_WORDS = {"no", "false", "n", "0", "incorrect", "wrong"}
NONE_WORDS = {"", "none", "null", "n/a"}
NUMBER_PATTERN = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether None is allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) < len(get_args(annotation)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return annotation, False


def _is_list_of_str(annotation: Any) -> bool:
    return get_origin(annotation) is list and get_args(annotation) in ((str,), ())


def _value_hint(annotation: Any) -> str | None:
    """How an output of this type must be written, in a few words (None for plain text and
    for choices, which are listed after the inputs)."""
    annotation, _ = _unwrap_optional(annotation)
    if get_origin(annotation) is Literal:
        return None
    if annotation is bool:
        return "yes or no"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    if _is_list_of_str(annotation):
        return "a comma-separated list"
    if annotation is str:
        return None
    return "JSON on one line"


def _choices(annotation: Any) -> tuple | None:
    annotation, _ = _unwrap_optional(annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else None


def _value_prefill(annotation: Any) -> str:
    """What the adapter writes after `name:` before the model continues: a JSON object's
    opening brace, so that a small model writes JSON rather than a list of values."""
    annotation, _ = _unwrap_optional(annotation)
    if annotation is dict or get_origin(annotation) is dict:
        return " {"
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return " {"
    return ""


def _short_value(annotation: Any) -> bool:
    annotation, _ = _unwrap_optional(annotation)
    return get_origin(annotation) is Literal or annotation in (bool, int, float)


def format_input_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(format_input_value(item) for item in value)
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json()
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _strip_quotes(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        return text[1:-1].strip()
    return text


class CompactAdapter(dspy.Adapter):
    """Compact prompts and field-by-field generation for small local models."""

    def format_system_message(self, signature: type[Signature]) -> str:
        instructions = _one_line(signature.instructions)
        hints = [
            f"{name}: {hint}."
            for name, field in signature.output_fields.items()
            if (hint := _value_hint(field.annotation)) is not None
        ]
        return " ".join([instructions, *hints])

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        lines = [
            f"{name}: {format_input_value(inputs[name])}"
            for name in signature.input_fields
            if name in inputs and inputs[name] is not None
        ]
        # Measured: the 135M model picks a label far more often when the choices come right
        # after the inputs than when the system line lists them.
        lines += [
            f"Choose the {name} from: {', '.join(map(str, choices))}."
            for name, field in signature.output_fields.items()
            if (choices := _choices(field.annotation))
        ]
        return "\n".join(line for line in (prefix, *lines, suffix) if line)

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: dict[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        return "\n".join(
            f"{name}: {format_input_value(outputs[name])}"
            for name in signature.output_fields
            if name in outputs
        )

    def format_demos(
        self, signature: type[Signature], demos: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        # Only complete demos: a small model copies whatever shape it is shown.
        messages = []
        for demo in demos:
            if all(name in demo for name in signature.input_fields) and all(
                name in demo for name in signature.output_fields
            ):
                messages.append(
                    {"role": "user", "content": self.format_user_message_content(signature, demo)}
                )
                messages.append(
                    {
                        "role": "assistant",
                        "content": self.format_assistant_message_content(signature, demo),
                    }
                )
        return messages

    def field_messages(
        self,
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
        generated: dict[str, str],
        field_name: str,
    ) -> list[dict[str, Any]]:
        """The messages that ask for `field_name`, after the already generated output lines."""
        earlier = "".join(f"{name}: {text}\n" for name, text in generated.items())
        value_prefill = _value_prefill(signature.output_fields[field_name].annotation)
        return [
            {"role": "system", "content": self.format_system_message(signature)},
            *self.format_demos(signature, demos),
            {"role": "user", "content": self.format_user_message_content(signature, inputs)},
            {"role": "assistant", "content": f"{earlier}{field_name}:{value_prefill}"},
        ]

    def format(
        self,
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """The messages of the first model call (the first output field's pre-fill)."""
        first = next(iter(signature.output_fields))
        return self.field_messages(signature, demos, inputs, {}, first)

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """Parse a completion of `format()`'s messages: the first field's value, then
        `name: value` lines for the other output fields."""
        names = list(signature.output_fields)
        lines = completion.strip("\n").split("\n")
        texts = {names[0]: lines[0]}
        for line in lines[1:]:
            name, separator, value = line.partition(":")
            if separator and name.strip() in signature.output_fields:
                texts.setdefault(name.strip(), value)
        missing = [name for name in names if name not in texts]
        if missing:
            raise AdapterParseError(
                adapter_name=type(self).__name__,
                signature=signature,
                lm_response=completion,
                message=f"Missing output fields: {', '.join(missing)}.",
            )
        return {name: self.parse_field(signature, name, texts[name]) for name in names}

    def parse_field(self, signature: type[Signature], name: str, text: str) -> Any:
        """One output field's value from the text the model wrote after `name:`."""
        annotation, optional = _unwrap_optional(signature.output_fields[name].annotation)
        value = _strip_quotes(text.split("\n", 1)[0])

        def fail(reason: str) -> AdapterParseError:
            return AdapterParseError(
                adapter_name=type(self).__name__,
                signature=signature,
                lm_response=text,
                message=f"Field {name!r}: {reason}",
            )

        if optional and value.lower() in NONE_WORDS:
            return None
        if not value:
            raise fail("the model wrote no value.")
        if annotation is str:
            return value
        if get_origin(annotation) is Literal:
            return self._parse_choice(get_args(annotation), value, fail)
        if annotation is bool:
            word = re.split(r"[\s.,;:!]+", value.lower(), maxsplit=1)[0]
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise fail(f"{value!r} is not yes or no.")
        if annotation in (int, float):
            return self._parse_number(annotation, value, fail)
        if _is_list_of_str(annotation):
            return self._parse_list(value)
        try:
            return parse_value(value, annotation)
        except (ValueError, TypeError, pydantic.ValidationError) as exc:
            raise fail(f"{value!r} is not a valid {annotation}: {exc}") from exc

    @staticmethod
    def _parse_choice(choices: tuple, value: str, fail) -> Any:
        by_text = {str(choice).lower(): choice for choice in choices}
        lowered = value.lower().rstrip(".!")
        if lowered in by_text:
            return by_text[lowered]
        # The earliest choice named as a whole word ("Positive sentiment." -> positive).
        found = []
        for text, choice in by_text.items():
            match = re.search(rf"(?<![\w-]){re.escape(text)}(?![\w-])", lowered)
            if match:
                found.append((match.start(), -len(text), choice))
        if found:
            return min(found, key=lambda item: item[:2])[2]
        raise fail(f"{value!r} is not one of {', '.join(map(str, choices))}.")

    @staticmethod
    def _parse_number(annotation: type, value: str, fail) -> int | float:
        match = NUMBER_PATTERN.search(value.replace(",", ""))
        if match:
            number = float(match.group())
            if annotation is float:
                return number
            if number.is_integer():
                return int(number)
            raise fail(f"{value!r} is not a whole number.")
        word = re.split(r"[\s.,;:!]+", value.lower(), maxsplit=1)[0]
        if word in NUMBER_WORDS:
            return annotation(NUMBER_WORDS[word])
        raise fail(f"{value!r} is not a number.")

    @staticmethod
    def _parse_list(value: str) -> list[str]:
        if value.startswith("["):
            try:
                items = json.loads(value)
            except json.JSONDecodeError:
                items = None
            if isinstance(items, list):
                return [str(item).strip() for item in items if str(item).strip()]
            value = value.strip("[]")
        items = [
            _strip_quotes(item.strip().lstrip("-*").strip()) for item in re.split(r"[,;]", value)
        ]
        return [item.rstrip(".") for item in items if item.rstrip(".")]

    def _field_kwargs(
        self, lm: dspy.BaseLM, lm_kwargs: dict[str, Any], annotation: Any
    ) -> dict[str, Any]:
        kwargs = dict(lm_kwargs)
        # Call settings replace the LM's own for the call, so the LM's stop sequences and
        # token budget are merged in here rather than lost.
        defaults = getattr(lm, "kwargs", {})
        stop = kwargs.get("stop") or defaults.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        kwargs["stop"] = [*stop, "\n"] if "\n" not in stop else stop
        cap = SHORT_VALUE_MAX_TOKENS if _short_value(annotation) else LINE_MAX_TOKENS
        limit = kwargs.get("max_tokens") or defaults.get("max_tokens")
        kwargs["max_tokens"] = min(limit, cap) if limit else cap
        return kwargs

    @staticmethod
    def _generated_line(annotation: Any, completion: str) -> str:
        """The field's value as written: the adapter's value pre-fill, then the model's line."""
        return (_value_prefill(annotation) + completion).split("\n", 1)[0].strip()

    @staticmethod
    def _completion_text(outputs: list[Any]) -> str:
        output = outputs[0] if outputs else ""
        text = output.get("text") if isinstance(output, dict) else output
        return text or ""

    def _check_single(self, lm_kwargs: dict[str, Any]) -> None:
        if (lm_kwargs.get("n") or 1) != 1 or (lm_kwargs.get("num_generations") or 1) != 1:
            raise ValueError("CompactAdapter generates one completion per call (n=1).")

    def __call__(
        self,
        lm: dspy.BaseLM,
        lm_kwargs: dict[str, Any],
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        self._check_single(lm_kwargs)
        generated: dict[str, str] = {}
        values: dict[str, Any] = {}
        for name, field in signature.output_fields.items():
            messages = self.field_messages(signature, demos, inputs, generated, name)
            with adapter_message_call(lm, messages):
                outputs = lm(
                    messages=messages, **self._field_kwargs(lm, lm_kwargs, field.annotation)
                )
            line = self._generated_line(field.annotation, self._completion_text(outputs))
            values[name] = self.parse_field(signature, name, line)
            generated[name] = line
        return [values]

    async def acall(
        self,
        lm: dspy.BaseLM,
        lm_kwargs: dict[str, Any],
        signature: type[Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        self._check_single(lm_kwargs)
        generated: dict[str, str] = {}
        values: dict[str, Any] = {}
        for name, field in signature.output_fields.items():
            messages = self.field_messages(signature, demos, inputs, generated, name)
            with adapter_message_call(lm, messages):
                outputs = await lm.acall(
                    messages=messages, **self._field_kwargs(lm, lm_kwargs, field.annotation)
                )
            line = self._generated_line(field.annotation, self._completion_text(outputs))
            values[name] = self.parse_field(signature, name, line)
            generated[name] = line
        return [values]
