"""What Dagster loads (workspace.yaml and `dagster dev -m hatch_pipeline.definitions` point here)."""

from __future__ import annotations

import dagster as dg

from hatch_pipeline.resources import export_resource
from hatch_pipeline.settings import Settings

settings = Settings.from_env()

defs = dg.Definitions(
    resources={"hatch_api": export_resource(settings, dg.EnvVar("HATCH_API_KEY"))},
)
