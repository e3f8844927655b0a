"""The two jobs: every hatch asset of one day or range (what the daily schedule and the catch-up sensor launch),
and every check materializing nothing (what the checks' schedule launches)."""

from __future__ import annotations

import dagster as dg

from hatch_pipeline.contract import DATA_SOURCES
from hatch_pipeline.defs.constants import CHECKS_JOB_NAME, DAILY_JOB_NAME, GROUP, source_keys


def daily_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        DAILY_JOB_NAME,
        selection=dg.AssetSelection.groups(GROUP),
        description="Every hatch asset of one day (or a range): export, Parquet, BigQuery.",
    )


def checks_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        CHECKS_JOB_NAME,
        selection=dg.AssetSelection.checks_for_assets(*source_keys(DATA_SOURCES)),
        description="Every check of every hatch asset, over every stored day, materializing nothing.",
    )
