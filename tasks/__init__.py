"""Prefect tasks: thin wrappers over the pure functions in `ctloop`, one module per stage."""
