"""API plumbing shared by every app: errors, authentication, throttling, parsing, schema."""
