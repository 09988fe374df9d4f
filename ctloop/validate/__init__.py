"""Validate: a batch checked against the schema and the reference window."""
