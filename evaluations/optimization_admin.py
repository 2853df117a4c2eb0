"""Admin of optimization runs."""
