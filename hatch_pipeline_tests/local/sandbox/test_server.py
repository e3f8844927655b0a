"""The sandbox server over real HTTP: every answer of the published contract, the rate limits and the faults."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from hatch_pipeline.contract import DATA_SOURCES, DataSource, ExportWindow, contract_violations
from hatch_pipeline.local.sandbox import DEFAULT_API_KEY, Fault, SandboxConfig, SandboxServer, rows_for_day

TODAY = date(2026, 6, 1)
YESTERDAY = TODAY - timedelta(days=1)
CONFIG = SandboxConfig(today=TODAY, rows_per_day=20)
WEEK = {"start_date": "2026-05-25", "end_date": "2026-05-31"}


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(CONFIG) as running:
        yield running


def export(server: SandboxServer, key: str | None = DEFAULT_API_KEY, **params: str) -> httpx.Response:
    """GET the export of contact_history for WEEK, with `params` overriding (an empty value sends it empty)."""
    return httpx.get(f"{server.base_url}/export-data", params=query(**params), headers=bearer(key), timeout=30)


def query(**params: str) -> dict[str, str]:
    return {"data_source": "contact_history", **WEEK, **params}


def bearer(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def single_member(response: httpx.Response) -> tuple[str, str]:
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        (member,) = archive.infolist()
        return member.filename, archive.read(member).decode()


def json_rows(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in single_member(response)[1].splitlines()]


def csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def expected_rows(source: DataSource, window: ExportWindow, config: SandboxConfig) -> list[dict[str, object]]:
    return [row for day in window.dates() for row in rows_for_day(source, day, config)]


@pytest.mark.parametrize("source", DATA_SOURCES)
def test_json_export_is_a_zip_holding_one_ndjson_file_with_the_days_rows(
    server: SandboxServer, source: DataSource
) -> None:
    response = export(server, data_source=source)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    stem = f"{source}_2026-05-25_2026-05-31"
    assert response.headers["content-disposition"] == f'attachment; filename="{stem}.zip"'
    assert int(response.headers["content-length"]) == len(response.content)
    assert single_member(response)[0] == f"{stem}.json"
    assert json_rows(response) == expected_rows(source, ExportWindow(date(2026, 5, 25), YESTERDAY), CONFIG)


@pytest.mark.parametrize("source", DATA_SOURCES)
def test_csv_export_round_trips_every_value_of_the_json_export(server: SandboxServer, source: DataSource) -> None:
    server.config = replace(CONFIG, new_columns_from=date(2026, 5, 28))
    from_json = json_rows(export(server, data_source=source))
    response = export(server, data_source=source, output_format="csv")
    assert response.status_code == 200
    name, text = single_member(response)
    assert name == f"{source}_2026-05-25_2026-05-31.csv"
    from_csv = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(from_csv) == len(from_json) == 7 * 20
    assert all(set(row) == set(from_csv[0]) for row in from_csv)
    for csv_row, json_row in zip(from_csv, from_json, strict=True):
        assert csv_row == {column: csv_cell(json_row.get(column)) for column in csv_row}
    if source == "conversation_items":
        bodies = [row["body"] for row in from_csv]
        assert any("\n" in body for body in bodies) and any('"' in body for body in bodies)


def test_new_columns_appear_from_the_configured_day(server: SandboxServer) -> None:
    server.config = replace(CONFIG, new_columns_from=date(2026, 5, 28))
    rows = json_rows(export(server))
    earlier = [row for row in rows if str(row["updated_at"]) < "2026-05-28"]
    later = [row for row in rows if str(row["updated_at"]) >= "2026-05-28"]
    assert earlier and later
    assert all("invoice_id" not in row for row in earlier)
    assert all({"external_contact_id", "appointment_id", "invoice_id"} <= set(row) for row in later)
    header = single_member(export(server, output_format="csv"))[1].splitlines()[0]
    assert header.endswith("external_contact_id,appointment_id,invoice_id")
    assert "invoice_id" not in single_member(export(server, output_format="csv", end_date="2026-05-27"))[1]


def test_a_days_rows_are_the_same_in_a_one_day_and_a_multi_day_export(server: SandboxServer) -> None:
    week = json_rows(export(server, data_source="conversation_items"))
    day = json_rows(export(server, data_source="conversation_items", start_date="2026-05-27", end_date="2026-05-27"))
    assert len(day) == 20
    assert day == [row for row in week if str(row["created_at"]).startswith("2026-05-27")]


def test_exports_are_deterministic_across_servers() -> None:
    contents = []
    for _ in range(2):
        with SandboxServer(CONFIG) as fresh:
            contents.append(single_member(export(fresh, output_format="csv")))
    assert contents[0] == contents[1]


def test_repeated_requests_are_served_the_same_bytes(server: SandboxServer) -> None:
    assert export(server).content == export(server).content


def test_stop_deletes_the_built_zips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with SandboxServer(CONFIG) as running:
        assert export(running).status_code == 200
        assert any(path.suffix == ".zip" for path in tmp_path.rglob("*"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "config",
    [
        replace(CONFIG, empty_days=frozenset(ExportWindow(date(2026, 5, 25), YESTERDAY).dates())),
        replace(CONFIG, rows_per_day=0),
    ],
    ids=["empty-days", "no-rows"],
)
def test_a_range_without_rows_is_answered_204_without_a_body(config: SandboxConfig) -> None:
    with SandboxServer(config) as running:
        response = export(running)
    assert response.status_code == 204
    assert response.content == b""


def test_empty_days_are_left_out_of_a_longer_export(server: SandboxServer) -> None:
    server.config = replace(CONFIG, empty_days=frozenset({date(2026, 5, 26)}))
    days = {str(row["updated_at"])[:10] for row in json_rows(export(server))}
    assert days == {"2026-05-25", "2026-05-27", "2026-05-28", "2026-05-29", "2026-05-30", "2026-05-31"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"data_source": ""}, "missing required parameter(s) data_source"),
        ({"start_date": ""}, "missing required parameter(s) start_date"),
        ({"end_date": ""}, "missing required parameter(s) end_date"),
        ({"start_date": "2026-5-25"}, "start_date '2026-5-25' is not a date in YYYY-MM-DD form"),
        ({"end_date": "2026-02-30"}, "end_date '2026-02-30' is not a date in YYYY-MM-DD form"),
        ({"start_date": "2026-05-31", "end_date": "2026-05-25"}, "end_date 2026-05-25 is before start_date"),
        ({"output_format": "xml"}, "unknown output_format 'xml'; use one of json, csv"),
        ({"output_format": ""}, "unknown output_format ''"),
    ],
)
def test_malformed_requests_are_answered_400_saying_what_is_wrong(
    server: SandboxServer, params: dict[str, str], expected: str
) -> None:
    response = export(server, **params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert expected in response.json()["error"]


@pytest.mark.parametrize(
    ("source", "start", "end"),
    [
        ("messages", date(2026, 5, 25), YESTERDAY),
        ("contact_history", date(2025, 12, 1), YESTERDAY),  # 182 days wide and too far back
        ("contact_history", TODAY - timedelta(days=181), TODAY - timedelta(days=170)),
        ("contact_history", date(2026, 5, 25), TODAY),
    ],
    ids=["unknown-source", "too-wide", "too-far-back", "includes-today"],
)
def test_every_contract_violation_is_answered_400_with_the_contract_message(
    server: SandboxServer, source: str, start: date, end: date
) -> None:
    expected = contract_violations(source, ExportWindow(start, end), TODAY)
    assert expected
    response = export(server, data_source=source, start_date=start.isoformat(), end_date=end.isoformat())
    assert response.status_code == 400
    assert response.json() == {"error": "; ".join(expected)}


def test_the_oldest_and_widest_window_the_contract_allows_is_served(server: SandboxServer) -> None:
    start = TODAY - timedelta(days=180)
    response = export(server, start_date=start.isoformat(), end_date=(start + timedelta(days=179)).isoformat())
    assert response.status_code == 200
    assert len(json_rows(response)) == 180 * 20


@pytest.mark.parametrize("key", [None, "wrong-key"], ids=["missing", "unknown"])
def test_a_missing_or_unknown_key_is_answered_401(server: SandboxServer, key: str | None) -> None:
    response = export(server, key=key)
    assert response.status_code == 401
    assert "error" in response.json()
    assert response.headers["www-authenticate"] == "Bearer"
    assert server.access_log[-1].organization_id is None


def test_a_key_outside_a_bearer_header_is_refused(server: SandboxServer) -> None:
    response = httpx.get(f"{server.base_url}/export-data", params=query(), headers={"Authorization": DEFAULT_API_KEY})
    assert response.status_code == 401


def test_an_unknown_path_is_answered_404(server: SandboxServer) -> None:
    response = httpx.get(f"{server.base_url}/exports", headers=bearer(DEFAULT_API_KEY))
    assert response.status_code == 404
    assert "/api/v1/export-data" in response.json()["error"]


def test_a_data_file_over_the_payload_limit_is_answered_413(server: SandboxServer) -> None:
    three_days = len(single_member(export(server, start_date="2026-05-29"))[1].encode())
    week = len(single_member(export(server))[1].encode())
    server.config = replace(CONFIG, max_payload_bytes=three_days)
    assert export(server, output_format="csv", start_date="2026-05-28").status_code == 200  # the CSV is smaller
    too_large = export(server)
    assert too_large.status_code == 413
    assert too_large.json()["error"].endswith("narrow the date range")
    assert export(server, start_date="2026-05-29").status_code == 200
    server.config = replace(CONFIG, max_payload_bytes=week)
    assert export(server).status_code == 200  # a higher limit rebuilds what a lower one cut short


def test_exports_sooner_than_the_interval_are_answered_429_with_retry_after(server: SandboxServer) -> None:
    server.config = replace(CONFIG, min_export_interval_seconds=30)
    assert export(server).status_code == 200
    refused = export(server, data_source="conversation_items")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert "retry in" in refused.json()["error"]


def test_retry_after_is_left_out_when_configured_so(server: SandboxServer) -> None:
    server.config = replace(CONFIG, min_export_interval_seconds=30, send_retry_after=False)
    assert export(server).status_code == 200
    refused = export(server)
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers


def test_keys_of_one_organization_share_its_limits() -> None:
    keys = {"key-a1": "org-a", "key-a2": "org-a", "key-b": "org-b"}
    with SandboxServer(replace(CONFIG, api_keys=keys, min_export_interval_seconds=60)) as running:
        assert export(running, key="key-a1").status_code == 200
        assert export(running, key="key-a2").status_code == 429
        assert export(running, key="key-b").status_code == 200
        assert [record.organization_id for record in running.access_log] == ["org-a", "org-a", "org-b"]


def test_the_daily_cap_counts_the_last_24_hours(server: SandboxServer) -> None:
    server.config = replace(CONFIG, max_exports_per_day=2)
    assert export(server).status_code == 200
    assert export(server, data_source="conversation_items").status_code == 200
    refused = export(server)
    assert refused.status_code == 429
    assert 86_000 < int(refused.headers["retry-after"]) <= 86_400


def test_only_200_204_and_413_answers_count_as_exports(server: SandboxServer) -> None:
    server.config = replace(CONFIG, max_exports_per_day=3, max_payload_bytes=1, empty_days=frozenset({YESTERDAY}))
    assert export(server, output_format="xml").status_code == 400
    assert export(server, key="wrong").status_code == 401
    server.inject(Fault(status=500), Fault(cut=0.5), Fault(corrupt=True), Fault(reset=0.5))
    assert export(server).status_code == 500
    with pytest.raises(httpx.RemoteProtocolError):
        export(server)
    assert export(server).status_code == 200  # corrupt
    with pytest.raises(httpx.ReadError):
        export(server)
    assert export(server).status_code == 413
    assert export(server, start_date="2026-05-31").status_code == 204
    server.config = replace(server.config, max_payload_bytes=100_000_000)
    assert export(server, start_date="2026-05-30").status_code == 200
    assert export(server).status_code == 429


def test_an_injected_status_is_answered_with_a_json_body_once(server: SandboxServer) -> None:
    server.inject(Fault(status=503, retry_after=7, message="maintenance"))
    failed = export(server)
    assert failed.status_code == 503
    assert failed.json() == {"error": "maintenance"}
    assert failed.headers["retry-after"] == "7"
    assert export(server).status_code == 200
    assert [record.fault for record in server.access_log] == ["status 503", None]


def test_faults_apply_in_order_and_only_to_authenticated_valid_requests(server: SandboxServer) -> None:
    server.inject(Fault(status=500), Fault(status=429))
    assert export(server, key=None).status_code == 401
    assert export(server, end_date="yesterday").status_code == 400
    assert export(server).status_code == 500
    rate_limited = export(server)
    assert rate_limited.status_code == 429
    assert "retry-after" not in rate_limited.headers
    assert export(server).status_code == 200


def test_a_slow_answer_makes_a_short_client_timeout_expire(server: SandboxServer) -> None:
    server.inject(Fault(slow=5))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{server.base_url}/export-data", params=query(), headers=bearer(DEFAULT_API_KEY), timeout=0.2)


def test_a_slow_answer_arrives_whole_after_the_delay(server: SandboxServer) -> None:
    server.inject(Fault(slow=0.2))
    response = export(server)
    assert response.status_code == 200
    assert len(json_rows(response)) == 7 * 20
    assert server.access_log[-1].fault == "slow 0.2s"


def test_a_slow_answer_counts_when_it_arrives_not_when_it_is_answered(server: SandboxServer) -> None:
    """The vendor measures arrivals: a request that arrives an interval after a slow one is not refused, although
    it is answered before the slow one."""
    server.config = replace(CONFIG, min_export_interval_seconds=1.0)
    server.inject(Fault(slow=2.0))
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(export, server)
        time.sleep(1.5)
        assert export(server, data_source="conversation_items").status_code == 200
        assert slow.result().status_code == 200


def test_a_cut_body_breaks_the_transfer_and_the_next_request_is_whole(server: SandboxServer) -> None:
    server.inject(Fault(cut=0.5))
    with pytest.raises(httpx.RemoteProtocolError):
        export(server)
    cut, whole = server.access_log[-1], export(server)
    assert whole.status_code == 200
    assert 0 < cut.body_bytes < len(whole.content)
    assert cut.fault == "cut 0.5"


def test_a_corrupt_body_is_a_200_zip_that_does_not_open(server: SandboxServer) -> None:
    server.inject(Fault(corrupt=True))
    response = export(server)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(response.content))


def test_a_reset_before_the_answer_aborts_the_connection_and_the_next_request_is_whole(server: SandboxServer) -> None:
    server.inject(Fault(reset=0))
    with pytest.raises(httpx.ReadError, match="reset"):  # an RST; a clean close would be a RemoteProtocolError
        export(server)
    assert export(server).status_code == 200
    reset, whole = server.access_log
    assert (reset.status, reset.body_bytes, reset.fault) == (0, 0, "reset 0")
    assert (whole.status, whole.fault) == (200, None)


def test_a_reset_mid_body_aborts_the_transfer_after_part_of_the_zip(server: SandboxServer) -> None:
    server.inject(Fault(reset=0.5))
    with pytest.raises(httpx.ReadError, match="reset"):
        export(server)
    reset, whole = server.access_log[-1], export(server)
    assert (reset.status, reset.fault) == (200, "reset 0.5")
    assert 0 < reset.body_bytes < len(whole.content)


def test_faults_scheduled_by_number_hit_those_authenticated_valid_requests(server: SandboxServer) -> None:
    server.inject_at({2: Fault(status=500), 4: Fault(status=429, retry_after=2)})
    server.inject(Fault(status=503))
    assert export(server, key=None).status_code == 401  # not counted: not authenticated
    assert export(server, output_format="xml").status_code == 400  # not counted: not valid
    statuses = [export(server).status_code for _ in range(5)]
    assert statuses == [503, 500, 200, 429, 200], "the queued fault takes the first request without a scheduled one"
    assert [record.fault for record in server.access_log[2:]] == [
        "status 503",
        "status 500",
        None,
        "status 429",
        None,
    ]


def test_a_fault_cannot_be_scheduled_for_a_request_that_arrived_or_one_that_has_a_fault(server: SandboxServer) -> None:
    assert export(server).status_code == 200
    with pytest.raises(ValueError, match="1 request\\(s\\) have arrived already"):
        server.inject_at({1: Fault(status=500)})
    server.inject_at({3: Fault(status=500)})
    with pytest.raises(ValueError, match="request 3 already has a fault"):
        server.inject_at({3: Fault(cut=0.5)})
    assert [export(server).status_code for _ in range(2)] == [200, 500]


def test_faults_that_contradict_each_other_are_refused() -> None:
    with pytest.raises(ValueError, match="at most one"):
        Fault(status=500, corrupt=True)
    with pytest.raises(ValueError, match="at most one"):
        Fault(cut=0.5, reset=0.5)
    with pytest.raises(ValueError, match="fraction"):
        Fault(cut=1.5)
    with pytest.raises(ValueError, match="reset 1 must be a fraction"):
        Fault(reset=1)
    with pytest.raises(ValueError, match="empty Fault"):
        Fault()


def test_the_access_log_records_each_request_and_never_the_key() -> None:
    secret = "s3cret-key-do-not-log"
    with SandboxServer(replace(CONFIG, api_keys={secret: "org-x"})) as running:
        export(running, key=secret, output_format="csv")
        export(running, key="guess", data_source="conversation_items")
        first, second = running.access_log
        assert (first.organization_id, first.data_source, first.start_date, first.end_date) == (
            "org-x",
            "contact_history",
            "2026-05-25",
            "2026-05-31",
        )
        assert (first.output_format, first.status, first.fault) == ("csv", 200, None)
        assert first.body_bytes > 0 and first.at <= second.at
        assert (second.organization_id, second.status, second.output_format) == (None, 401, None)
        assert secret not in repr(running.access_log) and secret not in repr(running.config)
        running.clear_access_log()
        assert running.access_log == []
