"""The `ctloop` command line."""
