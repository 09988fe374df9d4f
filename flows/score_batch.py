"""`score-batch`: load the champion → read a file or snapshot → score (partitions fanned out) →
write predictions."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from ctloop.config.settings import Config, load_config
from ctloop.registry.store import CHAMPION
from ctloop.runlog import quiet_completed_tasks
from flows.fanout import score_partitions
from tasks.score import load_scoring_model, read_scoring_input, write_predictions


@flow(name="score-batch", log_prints=True, on_running=[quiet_completed_tasks])
def score_batch(
    source: str, output: str, config: Config | None = None, alias: str = CHAMPION
) -> dict:
    """Score every row of a CSV/Parquet file or a lake snapshot with the version behind `alias`.

    Args:
        source: a file path, or a snapshot id of the lake.
        output: where the predictions go (.parquet, or .csv).
        config: the project config (defaults to `ctloop.yaml` and the environment).
        alias: which version scores (the champion unless told otherwise).
    """
    config = config or load_config()

    # -- model and data
    ref, pipeline = load_scoring_model(config, alias)
    frame = read_scoring_input(source, config)

    # -- score (partitions of `serving.score_partition_rows` rows fan out) and write
    scored = score_partitions(pipeline, ref, frame, config)
    path = write_predictions(scored.frame, output)

    summary = {
        "source": source,
        "output": path,
        "rows": len(scored.frame),
        "version": scored.version,
        "semver": scored.semver,
        "model_seconds": round(scored.model_seconds, 4),
    }
    create_markdown_artifact(
        markdown=f"Scored **{summary['rows']}** rows of `{source}` with version "
        f"{ref.version} ({ref.semver}) in {summary['model_seconds']} s of model time → `{path}`",
        key="score-batch",
        description="Batch scoring summary",
    )
    print(f"scored {summary['rows']} rows with version {ref.version} -> {path}")
    return summary
