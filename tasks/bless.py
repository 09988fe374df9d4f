"""Bless stage: the gate against the champion; the decision is always written with reasons."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ctloop.config.settings import GateConfig
from ctloop.gates.blessing import Blessing, bless
from ctloop.gates.reports import blessing_markdown


@task(name="bless-candidate", cache_policy=NO_CACHE)
def bless_candidate(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    gates: GateConfig,
    challenger_slices: dict | None = None,
    champion_slices: dict | None = None,
    gaps: tuple = (),
    warnings: tuple[str, ...] = (),
) -> Blessing:
    blessing = bless(
        challenger,
        champion,
        gates,
        challenger_slices=challenger_slices,
        champion_slices=champion_slices,
        gaps=gaps,
        warnings=warnings,
    )
    create_markdown_artifact(
        markdown=blessing_markdown(blessing, None),
        key="blessing",
        description="Blessing decision and its reasons",
    )
    return blessing
