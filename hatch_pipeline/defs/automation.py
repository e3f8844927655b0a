"""Automation: the conditions under which Dagster materializes an asset without anyone clicking, and the sensor
that evaluates them (`hatch_automation`).

Only the Parquet and BigQuery assets carry a condition, so that a raw materialization from the UI (any day or
range) ends in BigQuery on its own. The raw asset never does: an export spends the vendor's daily quota, so only
people, the daily schedule and the catch-up sensor ask for it.
"""

from __future__ import annotations

from typing import Final

import dagster as dg

from hatch_pipeline.defs.constants import AUTOMATION_SENSOR_NAME, GROUP

UPSTREAM_CHECKS_PASSED_OR_RERUN: Final = dg.AutomationCondition.all_deps_match(
    dg.AutomationCondition.all_checks_match(dg.AutomationCondition.check_passed(), blocking_only=True)
    | dg.AutomationCondition.will_be_requested()
).with_label("upstream_checks_passed_or_rerun")
"""Each upstream asset's blocking checks passed, or the upstream asset is requested on this tick too: its checks
then run in the same run, where a failed blocking check stops this asset's step. (Dagster's
`all_deps_blocking_checks_passed()` would wait for a check that only that run will execute, so a raw-only run
would reach BigQuery in two hops.)"""

FOLLOWS_UPSTREAM: Final = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & UPSTREAM_CHECKS_PASSED_OR_RERUN
).with_label("follows_upstream")
"""Materialize a partition after its upstream partition was materialized by a run that did not include this
asset, once nothing upstream is missing, running or failing a blocking check, and no run or backfill already
covers it.

Like `AutomationCondition.eager()` without its `in_latest_time_window()` (which would follow only yesterday, not an
older day or a range picked in the UI) and without `newly_missing()` (a new day is the schedule's job). Runs that
already select this asset (the daily schedule, the catch-up sensor, a whole-pipeline backfill) trigger nothing:
`any_deps_updated()` ignores upstream updates by runs that also targeted this asset, and `in_progress()` holds while
they run. Turning the sensor on requests nothing for the past: its first evaluation only records where it starts.
When such a run fails after its raw step stored days, the catch-up sensor (sensors.py) builds them: it sees the
failed partitions this condition cannot tell from a failure worth not repeating.
"""


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates the hatch assets' automation conditions every 30 s; on by default, since Dagster's own automation
    sensor starts stopped. A tick that requests several days becomes a backfill (emit_backfills), which follows the
    assets' BackfillPolicy.single_run(): one run per contiguous range, as a UI backfill does."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR_NAME,
        target=dg.AssetSelection.groups(GROUP),
        default_status=dg.DefaultSensorStatus.RUNNING,
        emit_backfills=True,
        description=(
            "Materializes hatch/parquet/S and hatch/bigquery/S for the days a run of hatch/raw/S alone landed "
            "(e.g. from the UI), once nothing upstream is missing, running or red on a blocking check. Never "
            "requests raw exports."
        ),
    )
