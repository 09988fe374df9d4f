"""The registry: MLflow runs, versions, aliases, semver, and lineage."""
