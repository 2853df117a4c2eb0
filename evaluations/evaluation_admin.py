"""Admin of evaluation runs."""
