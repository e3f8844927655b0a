"""What Dagster loads (workspace.yaml and `dagster dev -m hatch_pipeline.definitions` point here)."""

from __future__ import annotations

import dagster as dg

from hatch_pipeline.assets import build_source_assets
from hatch_pipeline.automation import daily_job, daily_partitions, daily_schedule
from hatch_pipeline.export_api.windows import DATA_SOURCES
from hatch_pipeline.resources import pipeline_resources
from hatch_pipeline.settings import Settings

settings = Settings.from_env()
partitions = daily_partitions(settings)
job = daily_job()

defs = dg.Definitions(
    assets=[
        asset
        for source in DATA_SOURCES
        for asset in build_source_assets(source, partitions, date_column=settings.date_column(source))
    ],
    jobs=[job],
    schedules=[daily_schedule(settings, job)],
    resources=pipeline_resources(settings),
)
