"""The pipeline through the real Dagster webserver and daemon (see conftest.py): what a user launches in the UI
is what lands in BigQuery, within the vendor's limits, with every check green."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from itertools import pairwise

import polars as pl
import pytest

from hatch_pipeline.defs.assets import GROUP
from hatch_pipeline.defs.automation import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, SCHEDULE_NAME
from hatch_pipeline.defs.checks import CHECKS_SCHEDULE_NAME
from hatch_pipeline.defs.sensors import SENSOR_NAME, SENSOR_NAME_TAG
from hatch_pipeline.local.sandbox.data import rows_on_day
from hatch_pipeline_tests.e2e.conftest import EXPORT_INTERVAL_SECONDS, Deployment
from hatch_pipeline_tests.e2e.graphql import (
    check_executions,
    group_assets,
    instigator,
    launch_backfill,
    runs,
    start_sensor,
    wait_for,
    wait_for_backfill,
)
from hatch_pipeline_tests.pipeline_fixtures import SOURCES, keys_of

pytestmark = pytest.mark.e2e

BACKFILL_TAG = "dagster/backfill"


def rows_per_day(table: pl.DataFrame, days: Iterable[date]) -> dict[date, int]:
    """The table's rows on each of `days`, counted on its partition column (zero for a day it does not hold)."""
    counts = dict(table.group_by("_export_date").len().iter_rows())
    return {day: counts.get(day, 0) for day in days}


def test_a_backfill_of_every_hatch_asset_becomes_one_range_run_that_lands_every_row(deployment: Deployment) -> None:
    webserver, pipeline, days = deployment.webserver, deployment.pipeline, deployment.days
    assets = group_assets(webserver, GROUP)
    assert set(assets) == set(keys_of()), "the group holds the three stages of both sources"

    backfill_id = launch_backfill(webserver, list(assets), days)
    finished = wait_for_backfill(webserver, backfill_id)

    assert (finished.status, finished.error) == ("COMPLETED_SUCCESS", None)
    # BackfillPolicy.single_run: the whole range of all six assets (they share partitions and policy) is one run.
    [run] = runs(webserver, {BACKFILL_TAG: backfill_id})
    assert run.status == "SUCCESS"
    assert run.assets == set(assets)
    range_tags = (run.tags[PARTITION_RANGE_START_TAG], run.tags[PARTITION_RANGE_END_TAG])
    assert range_tags == (days.start.isoformat(), days.end.isoformat())
    # What the vendor saw: one export per source for the whole range, spaced as the ledger promises.
    assert sorted(pipeline.exports()) == [
        (source, days.start.isoformat(), days.end.isoformat(), 200) for source in SOURCES
    ]
    arrivals = sorted(record.at for record in pipeline.sandbox.access_log)
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(arrivals)]
    assert all(gap >= EXPORT_INTERVAL_SECONDS for gap in gaps), gaps
    # Every row the sandbox serves for those days is in each table, on its day.
    served = {day: rows_on_day(day, pipeline.sandbox.config) for day in days.dates()}
    for source in SOURCES:
        assert rows_per_day(pipeline.table(source), days.dates()) == served, source
    # Every check of every asset ran in that run, and none failed. A range run records a check's result without a
    # partition; the per-day executions Dagster planned for it end SKIPPED (1.13), so those are not counted here.
    defined = {(asset, check) for asset, checks in assets.items() for check in checks}
    assert defined, "the assets have checks"
    executed = [
        execution
        for asset, check in defined
        for execution in check_executions(webserver, asset, check)
        if execution.run_id == run.run_id and execution.status != "SKIPPED"
    ]
    assert {(execution.asset, execution.check) for execution in executed} == defined
    assert [execution for execution in executed if execution.status != "SUCCEEDED"] == []


def test_once_every_day_has_landed_the_catch_up_sensor_requests_nothing(deployment: Deployment) -> None:
    """After the backfill above: the sensor, turned on, finds no missing day and launches no run."""
    webserver = deployment.webserver
    start_sensor(webserver, SENSOR_NAME)

    sensor = wait_for(
        "the catch-up sensor's first tick",
        lambda: instigator(webserver, SENSOR_NAME),
        lambda sensor: any(tick["status"] != "STARTED" for tick in sensor.ticks),
    )

    [tick] = sensor.ticks
    assert (tick["status"], tick["runIds"], tick["error"]) == ("SKIPPED", [], None), tick
    assert runs(webserver, {SENSOR_NAME_TAG: SENSOR_NAME}) == []


@pytest.mark.parametrize("name", [SCHEDULE_NAME, CHECKS_SCHEDULE_NAME])
def test_the_schedules_run_in_the_instance_without_being_turned_on(deployment: Deployment, name: str) -> None:
    schedule = instigator(deployment.webserver, name)

    assert schedule.status == "RUNNING"
    assert schedule.next_tick_at is not None
    assert datetime.fromtimestamp(schedule.next_tick_at, UTC).time() == deployment.schedules_at
