"""Refetches: a refetch exports each day once across its pauses and re-executions. Exports are counted from the
sandbox's access log."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import timedelta

from hatch_pipeline.defs.assets import REFETCH_TAG
from hatch_pipeline.local.sandbox.server import Fault
from hatch_pipeline_tests.pipeline_fixtures import YESTERDAY, Pipeline, days_of, keys_of, one_day_bytes

RAW_CONTACT_HISTORY = keys_of("raw", sources=["contact_history"])


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
