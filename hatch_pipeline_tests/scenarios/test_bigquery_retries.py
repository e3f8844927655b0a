"""The BigQuery step retries what passes and nothing else, in real runs against the sandbox and the emulators.

BigQuery's answer to a transaction aborted by a concurrent one comes from `BigQueryProxy` in front of the
emulator (which never aborts one: it runs jobs one at a time); every other call reaches the emulator. The proxy
also runs a real Parquet build of the same days when a load job arrives, so the load meets files that build
retired. The runs use the project's retry policy with the waits taken out (same number of retries), so the test
does not sleep.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Final

import dagster as dg
import pytest

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs.assets import BIGQUERY_RETRY_POLICY
from hatch_pipeline.defs.constants import bigquery_key
from hatch_pipeline.defs.resources import HatchStorageResource
from hatch_pipeline.stages.bigquery import LOAD_ATTEMPTS
from hatch_pipeline.stages.parquet import build_parquet
from hatch_pipeline_tests.support.bigquery_proxy import BigQueryProxy
from hatch_pipeline_tests.support.pipeline_fixtures import DEFAULT_SETTINGS, ROWS_PER_DAY, YESTERDAY, Pipeline, keys_of

SOURCE: Final = "contact_history"
RETRIES: Final = BIGQUERY_RETRY_POLICY.max_retries
UP_FOR_RETRY: Final = dg.DagsterEventType.STEP_UP_FOR_RETRY


@pytest.fixture
def proxy(pipeline: Pipeline) -> Iterator[BigQueryProxy]:
    with BigQueryProxy(pipeline.local_gcp.bigquery_endpoint) as running:
        yield running


@pytest.fixture
def through_proxy(pipeline: Pipeline, proxy: BigQueryProxy) -> Pipeline:
    """The same installation with BigQuery reached through the proxy and retries that do not wait."""
    pipeline.materialize(YESTERDAY, YESTERDAY, keys_of("raw", "parquet", sources=[SOURCE]))
    return dataclasses.replace(
        pipeline,
        local_gcp=dataclasses.replace(pipeline.local_gcp, bigquery_endpoint=proxy.endpoint),
        asset_options={"bigquery_retry_policy": dg.RetryPolicy(max_retries=RETRIES)},
    )


def load(pipeline: Pipeline, day: date = YESTERDAY) -> dg.ExecuteInProcessResult:
    return pipeline.materialize(day, day, [bigquery_key(SOURCE)], raise_on_error=False)


def test_a_load_aborted_by_concurrent_updates_is_retried_until_it_lands(
    through_proxy: Pipeline, proxy: BigQueryProxy
) -> None:
    proxy.abort_next_transactions(2)

    result = load(through_proxy)

    assert result.success
    assert len(result.filter_events(lambda event: event.event_type == UP_FOR_RETRY)) == 2
    assert [transaction.aborted for transaction in proxy.transactions] == [True, True, False]
    assert through_proxy.table(SOURCE).height == ROWS_PER_DAY


def test_retries_stop_after_the_policys_count(through_proxy: Pipeline, proxy: BigQueryProxy) -> None:
    proxy.abort_next_transactions(RETRIES + 1)

    result = load(through_proxy)

    assert not result.success
    assert len(result.filter_events(lambda event: event.event_type == UP_FOR_RETRY)) == RETRIES
    assert len(proxy.transactions) == RETRIES + 1
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert "Transaction is aborted due to concurrent update" in str(failure.step_failure_data.error)


def test_an_error_that_would_come_back_fails_the_step_at_once(through_proxy: Pipeline, proxy: BigQueryProxy) -> None:
    """The day before yesterday has no Parquet: loading it again cannot help, so no retry is spent."""
    result = load(through_proxy, YESTERDAY - timedelta(days=1))

    assert not result.success
    assert result.filter_events(lambda event: event.event_type == UP_FOR_RETRY) == []
    [failure] = [event for event in result.all_events if event.is_step_failure]
    user_failure = failure.step_failure_data.user_failure_data
    message = (user_failure.description if user_failure else None) or ""
    assert message.startswith("MissingUpstream:"), message
    assert f"materialize hatch/parquet/{SOURCE}" in message
    assert proxy.transactions == []


def rebuild(pipeline: Pipeline, builds: list[datetime]) -> None:
    """Build yesterday's Parquet again, as a run of the Parquet step beside the load would: its manifest retires
    the files the load named, and deletes them. Records the build's load time."""
    loaded_at = datetime.now(UTC)
    build_parquet(
        SOURCE,
        ExportWindow(YESTERDAY, YESTERDAY),
        store=HatchStorageResource(project=pipeline.local_gcp.project, bucket=pipeline.bucket).store(),
        timezone=DEFAULT_SETTINGS.timezone,
        loaded_at=loaded_at,
        today=YESTERDAY + timedelta(days=1),
        date_column=DEFAULT_SETTINGS.date_column(SOURCE),
    )
    builds.append(loaded_at)


def test_a_load_that_meets_files_a_newer_build_retired_loads_the_newest_build(
    through_proxy: Pipeline, proxy: BigQueryProxy
) -> None:
    builds: list[datetime] = []
    proxy.before_next_loads(1, lambda: rebuild(through_proxy, builds))

    result = load(through_proxy)

    assert result.success
    assert len(builds) == 1, "the build ran while the load was in BigQuery"
    assert result.filter_events(lambda event: event.event_type == UP_FOR_RETRY) == []
    table = through_proxy.table(SOURCE)
    assert table.height == ROWS_PER_DAY
    assert set(table["_loaded_at"].to_list()) == set(builds), "the rows are the newest build's"


def test_a_load_overtaken_by_builds_at_every_attempt_is_retried_by_the_step_not_failed_as_permanent(
    through_proxy: Pipeline, proxy: BigQueryProxy
) -> None:
    builds: list[datetime] = []
    proxy.before_next_loads(LOAD_ATTEMPTS, lambda: rebuild(through_proxy, builds))

    result = load(through_proxy)

    assert result.success
    assert len(builds) == LOAD_ATTEMPTS
    [retry] = result.filter_events(lambda event: event.event_type == UP_FOR_RETRY)
    assert retry.step_retry_data and "ParquetReplaced" in str(retry.step_retry_data.error)
    table = through_proxy.table(SOURCE)
    assert table.height == ROWS_PER_DAY
    assert set(table["_loaded_at"].to_list()) == {builds[-1]}
