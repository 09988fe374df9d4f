"""Prefect deployments, declared in Python in one place."""
