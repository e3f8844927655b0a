"""The names the Dagster shell modules share: asset keys, the group, pools, run tags, and the names of the jobs,
schedules and sensors. Here, so that assets, checks, schedules and sensors lean on one module, not on each other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import dagster as dg

from hatch_pipeline.contract import DataSource

GROUP: Final = "hatch"
OWNERS: Final = ["team:data-engineering"]


def raw_key(source: DataSource) -> dg.AssetKey:
    return dg.AssetKey(["hatch", "raw", source])


def parquet_key(source: DataSource) -> dg.AssetKey:
    return dg.AssetKey(["hatch", "parquet", source])


def bigquery_key(source: DataSource) -> dg.AssetKey:
    return dg.AssetKey(["hatch", "bigquery", source])


def source_keys(sources: Sequence[DataSource]) -> list[dg.AssetKey]:
    """Every asset key of `sources`, stage by stage: what a run of those sources' whole pipeline selects."""
    return [make(source) for make in (raw_key, parquet_key, bigquery_key) for source in sources]


API_POOL: Final = "hatch_export_api"
"""Steps that call the vendor API share this pool; its limit of one (dagster.yaml) keeps them in single file."""


def bigquery_pool(source: DataSource) -> str:
    """The pool of the steps that write `source`'s table: with a limit of one (dagster.yaml), two runs never
    replace days in one table at the same time (BigQuery aborts one of two concurrent transactions on a table),
    while the two sources' tables load in parallel."""
    return f"hatch_bigquery_{source}"


REFETCH_TAG: Final = "hatch/refetch"
"""A run tag (`true`) that makes the raw assets export the run's days again, e.g. on a UI backfill."""
ACCEPT_SHRINK_TAG: Final = "hatch/accept_shrink"
"""A run tag (`true`) that lets the Parquet assets publish a newer export far smaller than what is landed
(stages.SHRINK_LIMIT), e.g. when rows really were deleted at Hatch; without it the landed rows are kept."""
AS_OF_TAG: Final = "hatch/as_of"
"""Run tag (ISO-8601 instant) that `yesterday_landed` judges at instead of the clock: the schedule sets its tick."""

PARTITION_RANGE_START_TAG: Final = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG: Final = "dagster/asset_partition_range_end"
"""Dagster's run tags for a partition range materialized as one run (its own constants are private)."""
PARTITION_TAG: Final = "dagster/partition"
RUN_KEY_TAG: Final = "dagster/run_key"
SENSOR_NAME_TAG: Final = "dagster/sensor_name"
SCHEDULE_NAME_TAG: Final = "dagster/schedule_name"
"""Tags Dagster sets on runs (its own constants are private)."""

DAILY_JOB_NAME: Final = "hatch_daily"
SCHEDULE_NAME: Final = "hatch_daily_schedule"
CHECKS_JOB_NAME: Final = "hatch_checks"
CHECKS_SCHEDULE_NAME: Final = "hatch_checks_schedule"
SENSOR_NAME: Final = "hatch_catch_up"
AUTOMATION_SENSOR_NAME: Final = "hatch_automation"
ALERT_SENSOR_NAME: Final = "hatch_failure_alert"
