"""The coordinator's business rules: no HTTP here; callers get domain errors (agentkit.errors)."""
