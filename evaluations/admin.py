"""Admin of the evaluations app: evaluation runs and optimization runs."""

from evaluations import evaluation_admin, optimization_admin  # noqa: F401 (they register)
