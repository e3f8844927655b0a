"""Refetches: a refetch exports each day once across its pauses and re-executions, and one that comes back empty
or far smaller does not replace a landed day unless told to. Exports are counted from the sandbox's access log,
rows from the BigQuery table."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import date, timedelta

import dagster as dg
import pytest

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs.assets import build_source_assets
from hatch_pipeline.defs.checks import REFETCH_NOT_SHRUNK, ROWS_MATCH_RAW
from hatch_pipeline.defs.constants import ACCEPT_SHRINK_TAG, REFETCH_TAG
from hatch_pipeline.defs.partitions import daily_partitions, range_tags
from hatch_pipeline.local.sandbox.server import Fault
from hatch_pipeline_tests.support.pipeline_fixtures import (
    DEFAULT_SETTINGS,
    ROWS_PER_DAY,
    YESTERDAY,
    Pipeline,
    days_of,
    keys_of,
    one_day_bytes,
)

RAW_CONTACT_HISTORY = keys_of("raw", sources=["contact_history"])
CONTACT_HISTORY = keys_of(sources=["contact_history"])
DAY_BEFORE = YESTERDAY - timedelta(days=1)


def refetched_days(pipeline: Pipeline) -> Counter[str]:
    """How often each day was exported (200 or 204) since the access log was last cleared."""
    return Counter(day for _, a, b, status in pipeline.exports() if status in (200, 204) for day in days_of(a, b))


def test_a_refetch_that_pauses_at_a_long_retry_after_carries_on_without_exporting_a_window_again(
    pipeline: Pipeline,
) -> None:
    start = YESTERDAY - timedelta(days=3)
    pipeline.materialize(start, YESTERDAY, RAW_CONTACT_HISTORY)
    # One day per export from now on, and the vendor asks the refetch's third request to wait longer than the
    # step may wait: the step pauses (Dagster retries it in the same run) after storing two windows.
    pipeline.sandbox.config = dataclasses.replace(
        pipeline.sandbox.config, max_payload_bytes=one_day_bytes(pipeline) * 3 // 2
    )
    pipeline.api_options = {"max_slot_wait_seconds": 1, "max_quota_pauses": 1}
    pipeline.sandbox.inject(Fault(slow=0.01), Fault(slow=0.01), Fault(status=429, retry_after=3))
    pipeline.sandbox.clear_access_log()

    result = pipeline.materialize(start, YESTERDAY, RAW_CONTACT_HISTORY, tags={REFETCH_TAG: "true"})

    assert result.success
    assert [status for *_, status in pipeline.exports()].count(429) == 1, "the pause happened"
    exported = refetched_days(pipeline)
    assert set(exported) == set(days_of(str(start), str(YESTERDAY))), "every day of the range was refetched"
    assert set(exported.values()) == {1}, f"days refetched more than once: {exported}"


_INSTALLATIONS: dict[str, Pipeline] = {}
"""The test installations a reconstructed job is wired to, by bucket (the job runs in this process)."""


def raw_contact_history_job(bucket: str, max_exports_per_day: int) -> dg.JobDefinition:
    """The reconstructable target of the re-execution test: the raw asset of contact_history wired to the test's
    installation with that cap, stopping at it rather than pausing for a day, run in process. Dagster re-executes
    only jobs it can rebuild by name."""
    installation = dataclasses.replace(
        _INSTALLATIONS[bucket],
        api_options={"max_exports_per_day": max_exports_per_day, "max_quota_pauses": 0, "max_slot_wait_seconds": 5},
    )
    assets = build_source_assets("contact_history", daily_partitions(DEFAULT_SETTINGS))
    job = dg.define_asset_job("raw_contact_history", RAW_CONTACT_HISTORY, executor_def=dg.in_process_executor)
    definitions = dg.Definitions(assets=assets, jobs=[job], resources=installation.resources())
    return definitions.resolve_job_def("raw_contact_history")


def with_cap(pipeline: Pipeline, cap: int) -> dg.ReconstructableJob:
    """The job above at a cap of `cap` exports per 24 hours, the sandbox enforcing the same."""
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, max_exports_per_day=cap)
    _INSTALLATIONS[pipeline.bucket] = pipeline
    return dg.build_reconstructable_job(
        __name__,
        raw_contact_history_job.__name__,
        reconstructable_kwargs={"bucket": pipeline.bucket, "max_exports_per_day": cap},
    )


def test_a_refetch_stopped_at_the_cap_and_re_executed_from_failure_exports_each_window_once(
    pipeline: Pipeline,
) -> None:
    start = YESTERDAY - timedelta(days=3)
    pipeline.materialize(start, YESTERDAY, RAW_CONTACT_HISTORY)  # one export
    pipeline.sandbox.config = dataclasses.replace(
        pipeline.sandbox.config, max_payload_bytes=one_day_bytes(pipeline) * 3 // 2
    )  # one day per export from now on
    pipeline.sandbox.clear_access_log()
    with dg.instance_for_test() as instance:
        tags = {**range_tags(ExportWindow(start, YESTERDAY)), REFETCH_TAG: "true"}
        # A cap of 3 leaves the refetch two exports after the landing's one.
        stopped = dg.execute_job(with_cap(pipeline, 3), instance, tags=tags, raise_on_error=False)
        assert not stopped.success
        assert Counter(status for *_, status in pipeline.exports()) == {200: 2}, "stopped at the cap"

        # A day later the cap has room again (a raised cap stands in for the passing of 24 hours). The UI's
        # re-execution copies the parent's tags; Python's takes them explicitly.
        from_failure = dg.ReexecutionOptions.from_failure(stopped.run_id, instance)
        resumed = dg.execute_job(with_cap(pipeline, 100), instance, tags=tags, reexecution_options=from_failure)

    assert resumed.success and resumed.dagster_run.root_run_id == stopped.run_id
    exported = refetched_days(pipeline)
    assert set(exported) == set(days_of(str(start), str(YESTERDAY))), "every day of the range was refetched"
    assert set(exported.values()) == {1}, f"days refetched more than once: {exported}"


def rows_per_day(pipeline: Pipeline) -> dict[date, int]:
    counts = pipeline.table("contact_history").group_by("_export_date").len()
    return dict(zip(counts["_export_date"].to_list(), counts["len"].to_list(), strict=True))


def evaluation(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    [found] = [check for check in result.get_asset_check_evaluations() if check.check_name == name]
    return found


@pytest.mark.parametrize(
    ("refetched", "answer"),
    [((YESTERDAY, YESTERDAY), 204), ((DAY_BEFORE, YESTERDAY), 200)],
    ids=["the vendor answers 204", "the export holds no rows for the day"],
)
def test_a_refetch_without_rows_for_a_landed_day_keeps_them_and_turns_a_check_red_until_the_shrink_is_accepted(
    pipeline: Pipeline, refetched: tuple[date, date], answer: int
) -> None:
    pipeline.materialize(DAY_BEFORE, YESTERDAY, CONTACT_HISTORY)
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, empty_days=frozenset({YESTERDAY}))
    pipeline.sandbox.clear_access_log()

    refetch = pipeline.materialize(*refetched, CONTACT_HISTORY, tags={REFETCH_TAG: "true"})

    assert pipeline.exports() == [("contact_history", str(refetched[0]), str(refetched[1]), answer)]
    assert rows_per_day(pipeline) == {DAY_BEFORE: ROWS_PER_DAY, YESTERDAY: ROWS_PER_DAY}, "the landed rows stay"
    shrunk = evaluation(refetch, REFETCH_NOT_SHRUNK)
    assert not shrunk.passed and shrunk.severity == dg.AssetCheckSeverity.ERROR
    failed = shrunk.metadata["failed_days"].value
    assert isinstance(failed, dict) and list(failed) == [YESTERDAY.isoformat()], "it names the day"
    assert (failed[YESTERDAY.isoformat()]["landed_rows"], failed[YESTERDAY.isoformat()]["refetched_rows"]) == (
        ROWS_PER_DAY,
        0,
    ), "and both counts"
    assert f"{ACCEPT_SHRINK_TAG}=true" in (shrunk.description or "")
    assert evaluation(refetch, ROWS_MATCH_RAW).passed, "the kept day is not reported as a stale build"

    accepted = pipeline.materialize(
        YESTERDAY,
        YESTERDAY,
        keys_of("parquet", "bigquery", sources=["contact_history"]),
        tags={ACCEPT_SHRINK_TAG: "true"},
    )

    assert len(pipeline.exports()) == 1, "accepting exports nothing"
    assert rows_per_day(pipeline) == {DAY_BEFORE: ROWS_PER_DAY}, "the accepted refetch empties the day"
    assert evaluation(accepted, REFETCH_NOT_SHRUNK).passed


def test_a_refetch_holding_half_the_landed_rows_replaces_them_and_one_holding_fewer_is_held(
    pipeline: Pipeline,
) -> None:
    pipeline.materialize(YESTERDAY, YESTERDAY, CONTACT_HISTORY)
    half = ROWS_PER_DAY // 2
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, rows_per_day=half)

    replaced = pipeline.materialize(YESTERDAY, YESTERDAY, CONTACT_HISTORY, tags={REFETCH_TAG: "true"})

    assert rows_per_day(pipeline) == {YESTERDAY: half}, "half the landed rows is not far fewer"
    assert evaluation(replaced, REFETCH_NOT_SHRUNK).passed
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, rows_per_day=half // 2 - 1)

    held = pipeline.materialize(YESTERDAY, YESTERDAY, CONTACT_HISTORY, tags={REFETCH_TAG: "true"})

    assert rows_per_day(pipeline) == {YESTERDAY: half}, "fewer than half of them is"
    failed = evaluation(held, REFETCH_NOT_SHRUNK).metadata["failed_days"].value
    assert isinstance(failed, dict)
    assert failed[YESTERDAY.isoformat()]["landed_rows"] == half
    assert failed[YESTERDAY.isoformat()]["refetched_rows"] == half // 2 - 1
    assert failed[YESTERDAY.isoformat()]["refetched_zip"].startswith(f"gs://{pipeline.bucket}/hatch/raw/")
