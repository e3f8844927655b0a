"""The Dagster shell: assets, checks, schedules, sensors and resources that wire the plain-Python core together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from hatch_pipeline.contract import DATA_SOURCES
from hatch_pipeline.defs.alerts import failure_alert_sensor
from hatch_pipeline.defs.assets import build_source_assets
from hatch_pipeline.defs.automation import automation_sensor
from hatch_pipeline.defs.checks import build_source_checks
from hatch_pipeline.defs.executor import STEP_EXECUTOR
from hatch_pipeline.defs.jobs import checks_job, daily_job
from hatch_pipeline.defs.partitions import daily_partitions
from hatch_pipeline.defs.schedules import checks_schedule, daily_schedule
from hatch_pipeline.defs.sensors import catch_up_sensor
from hatch_pipeline.settings import Settings


def build_definitions(settings: Settings, resources: Mapping[str, Any]) -> dg.Definitions:
    """Every definition of the project for `settings`; `resources` decide where it reads and writes (Google in
    deployments, local stand-ins in the demo and the tests)."""
    partitions = daily_partitions(settings)
    job = daily_job()
    audit = checks_job()
    alert = failure_alert_sensor(settings)
    return dg.Definitions(
        assets=[
            asset
            for source in DATA_SOURCES
            for asset in build_source_assets(source, partitions, date_column=settings.date_column(source))
        ],
        asset_checks=[check for source in DATA_SOURCES for check in build_source_checks(source, settings)],
        jobs=[job, audit],
        schedules=[daily_schedule(settings, job), checks_schedule(settings, audit)],
        sensors=[catch_up_sensor(settings, job, partitions), automation_sensor(), *([alert] if alert else [])],
        resources=dict(resources),
        executor=STEP_EXECUTOR,
    )
