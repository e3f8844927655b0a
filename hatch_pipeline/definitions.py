"""What Dagster loads in a deployment (workspace.yaml and `dagster dev -m hatch_pipeline.definitions` point here):
Google Cloud Storage and BigQuery as the HATCH_* settings describe them. The local stand-ins have their own module,
`hatch_pipeline.local.definitions`."""

from __future__ import annotations

from hatch_pipeline.defs import build_definitions
from hatch_pipeline.defs.resources import pipeline_resources
from hatch_pipeline.settings import Settings

settings = Settings.from_env()
defs = build_definitions(settings, pipeline_resources(settings))
