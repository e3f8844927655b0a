"""What Dagster loads in a deployment (workspace.yaml, `dagster api grpc -m hatch_pipeline.definitions` and
`dagster dev -m hatch_pipeline.definitions` point here): Google Cloud Storage and BigQuery as the HATCH_* settings
describe them; with STORAGE_EMULATOR_HOST and BIGQUERY_EMULATOR_HOST set (the demo, the tests), the same
definitions talk to local emulators instead.

Lazy: the HATCH_* variables are read when Dagster loads the code location, not when the module is imported."""

from __future__ import annotations

import dagster as dg

from hatch_pipeline.defs import build_definitions
from hatch_pipeline.defs.resources import pipeline_resources
from hatch_pipeline.settings import Settings


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return build_definitions(settings, pipeline_resources(settings))
