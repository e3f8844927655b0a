"""What Dagster loads on a laptop (`make demo`, the tests' Dagster commands): the project's definitions with
BigQuery and Cloud Storage at the local emulators named by BIGQUERY_EMULATOR_HOST and STORAGE_EMULATOR_HOST.
`dagster dev -m hatch_pipeline.local.definitions` after exporting those and the HATCH_* variables."""

from __future__ import annotations

import dagster as dg

from hatch_pipeline.defs import build_definitions
from hatch_pipeline.local.resources import local_resources
from hatch_pipeline.settings import Settings


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return build_definitions(settings, local_resources(settings))
