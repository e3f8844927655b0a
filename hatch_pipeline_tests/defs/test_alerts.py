"""The failure alert: a failed run posts one message to HATCH_ALERT_WEBHOOK naming its days, sources and cause,
never the API key; without the variable there is no alert sensor."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Final

import dagster as dg
import pytest

from hatch_pipeline.alerts import REDACTED, FailedRun, alert_text
from hatch_pipeline.contract import DataSource
from hatch_pipeline.defs import build_definitions
from hatch_pipeline.defs.alerts import failure_alert_sensor
from hatch_pipeline.defs.constants import ALERT_SENSOR_NAME
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.support.pipeline_fixtures import YESTERDAY, Pipeline, keys_of
from hatch_pipeline_tests.support.recording_server import RecordingServer

SOURCE: Final[DataSource] = "contact_history"


@pytest.fixture
def webhook() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def test_a_failed_run_posts_one_message_naming_its_days_sources_and_cause_without_the_key(
    pipeline: Pipeline, webhook: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HATCH_API_KEY", DEFAULT_API_KEY)
    pipeline.sandbox.config = dataclasses.replace(pipeline.sandbox.config, api_keys={})  # the vendor refuses the key
    instance = dg.DagsterInstance.ephemeral()
    start = YESTERDAY - timedelta(days=2)
    result = pipeline.materialize(start, YESTERDAY, keys_of(sources=[SOURCE]), raise_on_error=False, instance=instance)
    assert not result.success
    sensor = failure_alert_sensor(Settings(alert_webhook=webhook.url))
    assert sensor is not None

    context = dg.build_run_status_sensor_context(
        sensor_name=ALERT_SENSOR_NAME,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
    ).for_run_failure()
    sensor(context)

    [message] = webhook.received
    text = message["text"]
    assert f"for {start.isoformat()}..{YESTERDAY.isoformat()}" in text, text
    assert f"hatch__raw__{SOURCE}" in text, text
    assert "rejected the API key (HTTP 401" in text, text
    assert DEFAULT_API_KEY not in str(message)


def test_the_key_is_cut_out_of_any_cause_that_carries_it() -> None:
    failed = FailedRun(run_id="r" * 36, job="hatch_daily", assets=[], days=None, causes=[f"Bearer {DEFAULT_API_KEY}"])

    text = alert_text(failed, secrets=[DEFAULT_API_KEY])

    assert DEFAULT_API_KEY not in text
    assert f"Bearer {REDACTED}" in text


def test_without_a_webhook_there_is_no_alert_sensor() -> None:
    defs = build_definitions(Settings(), {})

    assert ALERT_SENSOR_NAME not in {sensor.name for sensor in defs.sensors or ()}
    assert ALERT_SENSOR_NAME in {
        sensor.name for sensor in build_definitions(Settings(alert_webhook="http://127.0.0.1:9/x"), {}).sensors or ()
    }
