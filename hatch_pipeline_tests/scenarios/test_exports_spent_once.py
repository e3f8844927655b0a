"""Exports are never spent twice: stored days are reused, a refetch is explicit, and a range larger than the daily
cap stops cleanly and carries on without exporting a day again. Every count comes from the sandbox's access log."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

import dagster as dg
from google.cloud.storage import Client as StorageClient

from hatch_pipeline.defs.constants import REFETCH_TAG
from hatch_pipeline.storage.manifests import parse_manifest_key
from hatch_pipeline_tests.support.pipeline_fixtures import (
    ROWS_PER_DAY,
    SOURCES,
    YESTERDAY,
    Pipeline,
    days_of,
    keys_of,
    one_day_bytes,
    without_load_time,
)


def test_a_second_run_of_a_landed_range_sends_no_export_and_leaves_the_tables_unchanged(pipeline: Pipeline) -> None:
    start = YESTERDAY - timedelta(days=6)
    pipeline.materialize(start, YESTERDAY)
    before = {source: without_load_time(pipeline.table(source)) for source in SOURCES}
    pipeline.sandbox.clear_access_log()

    again = pipeline.materialize(start, YESTERDAY)

    assert pipeline.exports() == []
    for source in SOURCES:
        assert without_load_time(pipeline.table(source)).equals(before[source])
        raw = again.asset_materializations_for_node(f"hatch__raw__{source}")[0].metadata
        assert raw["exports"] == dg.IntMetadataValue(0)
        windows = raw["windows"].value
        assert isinstance(windows, list) and [window["how"] for window in windows] == ["reused"]
        assert "hatch/refetch=true" in str(raw["how_to_refetch"])


def test_a_sub_range_of_a_stored_export_is_rebuilt_from_it_without_an_export(pipeline: Pipeline) -> None:
    pipeline.materialize(YESTERDAY - timedelta(days=9), YESTERDAY)
    pipeline.sandbox.clear_access_log()

    pipeline.materialize(YESTERDAY - timedelta(days=4), YESTERDAY - timedelta(days=2))

    assert pipeline.exports() == []
    assert pipeline.table("contact_history").height == 10 * ROWS_PER_DAY


def test_only_the_days_without_a_stored_export_are_exported(pipeline: Pipeline) -> None:
    middle = (YESTERDAY - timedelta(days=4), YESTERDAY - timedelta(days=2))
    pipeline.materialize(*middle, keys_of("raw"))
    pipeline.sandbox.clear_access_log()

    pipeline.materialize(YESTERDAY - timedelta(days=6), YESTERDAY)

    assert sorted(pipeline.exports()) == sorted(
        (source, str(start), str(end), 200)
        for source in SOURCES
        for start, end in [
            (YESTERDAY - timedelta(days=6), YESTERDAY - timedelta(days=5)),
            (YESTERDAY - timedelta(days=1), YESTERDAY),
        ]
    )
    for source in SOURCES:
        assert pipeline.table(source).height == 7 * ROWS_PER_DAY


def test_a_refetch_tag_exports_exactly_the_runs_days_again(pipeline: Pipeline, gcs_client: StorageClient) -> None:
    pipeline.materialize(YESTERDAY - timedelta(days=5), YESTERDAY)
    pipeline.sandbox.clear_access_log()
    asked = (YESTERDAY - timedelta(days=2), YESTERDAY)

    result = pipeline.materialize(*asked, tags={REFETCH_TAG: "true"})

    assert sorted(pipeline.exports()) == [(source, str(asked[0]), str(asked[1]), 200) for source in SOURCES]
    raw = result.asset_materializations_for_node("hatch__raw__contact_history")[0].metadata
    assert raw["refetch"] == dg.BoolMetadataValue(True)
    manifests = [
        manifest
        for blob in gcs_client.list_blobs(pipeline.bucket, prefix="hatch/manifests/raw/contact_history/")
        if (manifest := parse_manifest_key(blob.name.removeprefix("hatch/")))
    ]
    assert len(manifests) == 2, "the refetch adds a manifest; the earlier export stays stored"
    for source in SOURCES:
        assert pipeline.table(source).height == 6 * ROWS_PER_DAY


CAP = 4
"""Exports per day in the cap test: a 10-day range at 3 days per export needs more, 413s included."""


def test_a_range_beyond_the_daily_cap_stops_cleanly_and_the_next_attempt_exports_no_day_twice(
    pipeline: Pipeline,
) -> None:
    start = YESTERDAY - timedelta(days=9)
    keys = keys_of(sources=["contact_history"])
    day_bytes = one_day_bytes(pipeline)
    pipeline.sandbox.config = dataclasses.replace(
        pipeline.sandbox.config, max_payload_bytes=day_bytes * 3, max_exports_per_day=CAP
    )
    pipeline.api_options = {"max_exports_per_day": CAP, "max_quota_pauses": 0, "max_slot_wait_seconds": 5}

    stopped = pipeline.materialize(start, YESTERDAY, keys, raise_on_error=False)

    assert not stopped.success
    first = pipeline.exports()
    assert len(first) == CAP and 429 not in [status for *_, status in first]
    [failure] = [event for event in stopped.all_events if event.is_step_failure]
    message = str(failure.step_failure_data.error)
    assert re.search(r"\d+ day\(s\) of the range are stored, \d+ remain \(", message), message
    assert "The next slot opens at" in message
    landed = {
        event.step_materialization_data.materialization.partition
        for event in stopped.all_events
        if event.is_step_materialization
    }

    # A day later the cap has room again (here: a raised cap stands in for the passing of 24 hours).
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, max_exports_per_day=100)
    pipeline.api_options = {}
    pipeline.sandbox.clear_access_log()
    pipeline.materialize(start, YESTERDAY, keys)

    second = [(a, b) for _, a, b, status in pipeline.exports() if status == 200]
    first_days = {day for _, a, b, status in first if status == 200 for day in days_of(a, b)}
    assert first_days, "some windows landed before the cap"
    second_days = [day for a, b in second for day in days_of(a, b)]
    assert landed == first_days, "the days that landed before the stop show as materialized"
    assert not first_days & set(second_days), "no day is exported twice"
    assert len(second_days) == len(set(second_days))
    table = pipeline.table("contact_history")
    assert table.height == 10 * ROWS_PER_DAY
    assert table["contact_history_id"].n_unique() == table.height


def test_each_window_is_reported_in_the_runs_log_as_it_starts_and_lands(pipeline: Pipeline) -> None:
    with dg.instance_for_test() as instance:
        result = pipeline.materialize(YESTERDAY - timedelta(days=2), YESTERDAY, keys_of("raw"), instance=instance)
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]

    window = f"{YESTERDAY - timedelta(days=2)}..{YESTERDAY}"
    for source in SOURCES:
        starts = [m for m in messages if m.startswith(f"{source} {window}: exporting 3 day(s)")]
        assert starts and "left; next slot" in starts[0] and "last export about" in starts[0]
        assert any(m.startswith(f"{source} {window}: exported, stored gs://{pipeline.bucket}/") for m in messages)
        assert any(m.startswith(f"{source} {window} attempt 1: HTTP 200") for m in messages), "the client's own line"
