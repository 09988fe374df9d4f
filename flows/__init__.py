"""Prefect flows: wiring of the tasks, top to bottom like the pipeline they run."""
