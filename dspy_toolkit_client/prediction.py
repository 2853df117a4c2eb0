"""The result of a call: a `dspy.Prediction`, so code written for local DSPy programs reads it
the same way, with what the toolkit knows about the execution alongside."""

from collections.abc import Mapping
from typing import Any

import dspy


class ToolkitPrediction(dspy.Prediction):
    """The outputs as attributes (`prediction.answer`) and items (`prediction["answer"]`,
    which also reaches an output named like one of the properties below); the execution's id,
    the provider that answered, the version that ran and the metrics beside them.

    The properties live on the class, so `dspy.Example` keeps them out of the outputs.
    """

    @classmethod
    def from_execution(cls, execution: Mapping[str, Any]) -> "ToolkitPrediction":
        prediction = cls(**(execution.get("outputs") or {}))
        prediction._execution = dict(execution)
        metrics = execution.get("metrics") or {}
        if metrics.get("input_tokens") is not None or metrics.get("output_tokens") is not None:
            # The shape `dspy.track_usage` reports, keyed by the provider as DSPy keys by model.
            input_tokens = metrics.get("input_tokens") or 0
            output_tokens = metrics.get("output_tokens") or 0
            prediction.set_lm_usage(
                {
                    execution.get("provider") or "unknown": {
                        "prompt_tokens": input_tokens,
                        "completion_tokens": output_tokens,
                        "total_tokens": input_tokens + output_tokens,
                    }
                }
            )
        return prediction

    @property
    def execution_id(self) -> str:
        return self._execution["id"]

    @property
    def provider(self) -> str | None:
        """The provider that answered, after any fallback."""
        return self._execution.get("provider")

    @property
    def version(self) -> int:
        return self._execution["version"]

    @property
    def metrics(self) -> dict[str, Any]:
        """`execution_time_s`, `input_tokens`, `output_tokens`, `memory_mb`, `success`."""
        return dict(self._execution.get("metrics") or {})

    @property
    def execution(self) -> dict[str, Any]:
        """The execution as the API answered it (status, timings, attempts, ...)."""
        return dict(self._execution)
