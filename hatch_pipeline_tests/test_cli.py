"""`hatch-pipeline plan` and `doctor`: what a user sees before spending an export, and that neither sends one;
`screenshot` without Chromium says how to install it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from hatch_pipeline.cli import main
from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.export_api.ledger import LocalLedgerStore, RateLedger, organization_key

YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)
KEY = "cli-test-key"


@pytest.fixture
def local_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RateLedger:
    for name in ("HATCH_GCS_BUCKET", "HATCH_TIMEZONE", "HATCH_MAX_PAYLOAD_BYTES", "HATCH_MIN_EXPORT_INTERVAL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HATCH_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("HATCH_API_KEY", KEY)
    return RateLedger(
        LocalLedgerStore(tmp_path / "ledger"),
        organization=organization_key(KEY),
        min_interval=timedelta(seconds=300),
        max_per_day=100,
        max_wait=timedelta(0),
    )


def test_plan_sizes_windows_from_what_the_ledger_observed(
    local_ledger: RateLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    start = YESTERDAY - timedelta(days=99)
    local_ledger.record_bytes("contact_history", ExportWindow(start, YESTERDAY), 250_000_000)

    assert main(["plan", "contact_history", start.isoformat(), YESTERDAY.isoformat()]) == 0

    out = capsys.readouterr().out
    # 250 MB need 3 exports of 100 MB (2 % growth margin included); shared evenly, the first takes 34 days.
    assert f"contact_history {start}..{YESTERDAY}: 3 export(s), sized from 100 observed day(s)" in out
    assert f"  {start}..{start + timedelta(days=33)}   34 day(s)  ~85.0 MB" in out
    assert "3 export(s) take 0.03 day(s) of quota (100 exports per 24 h)" in out


def test_plan_says_when_the_last_export_can_go_given_the_slots_already_reserved(
    local_ledger: RateLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    start = YESTERDAY - timedelta(days=99)
    local_ledger.record_bytes("contact_history", ExportWindow(start, YESTERDAY), 250_000_000)
    reserved = local_ledger.reserve()  # another run's export: the plan's three go 5, 10 and 15 minutes later
    spacing = timedelta(seconds=303)  # the interval plus its default 1 % guard band

    assert main(["plan", "contact_history", start.isoformat(), YESTERDAY.isoformat()]) == 0

    last = reserved.slot_at + 3 * spacing
    out = capsys.readouterr().out
    assert f"from the rate ledger's reservations: last export at {last.isoformat(timespec='seconds')}" in out
    assert local_ledger.next_slot() == reserved.slot_at + spacing, "planning reserves nothing"


def test_plan_without_observations_takes_the_whole_range_at_once(
    local_ledger: RateLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    start = YESTERDAY - timedelta(days=29)

    assert main(["plan", "conversation_items", start.isoformat(), YESTERDAY.isoformat()]) == 0

    assert f"  {start}..{YESTERDAY}   30 day(s)  size unknown" in capsys.readouterr().out


def test_plan_refuses_days_the_api_does_not_serve(local_ledger: RateLedger, capsys: pytest.CaptureFixture[str]) -> None:
    today = datetime.now(UTC).date()

    assert main(["plan", "contact_history", date(2020, 1, 1).isoformat(), today.isoformat()]) == 2

    err = capsys.readouterr().err
    assert "start_date 2020-01-01 is more than 180 days back" in err
    assert f"end_date {today} is not before today" in err


def test_doctor_shows_the_next_slot_and_never_the_key(
    local_ledger: RateLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    reserved = local_ledger.reserve()

    assert main(["doctor"]) == 0

    out = capsys.readouterr().out
    assert f"organization ledger key {organization_key(KEY)}" in out
    next_slot = reserved.slot_at + timedelta(seconds=303)  # the interval plus its default 1 % guard band
    assert f"next export slot {next_slot.isoformat(timespec='seconds')}" in out
    assert KEY not in out


def test_doctor_warns_until_the_first_partition_is_fixed(
    local_ledger: RateLedger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HATCH_FIRST_PARTITION", raising=False)
    assert main(["doctor"]) == 0
    assert "HATCH_FIRST_PARTITION is not set: the partitions start on the project default 2026-06-01" in (
        capsys.readouterr().err
    )

    monkeypatch.setenv("HATCH_FIRST_PARTITION", "2026-09-01")
    assert main(["doctor"]) == 0
    assert "HATCH_FIRST_PARTITION" not in capsys.readouterr().err


def test_doctor_without_a_key_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HATCH_API_KEY", raising=False)

    assert main(["doctor"]) == 1

    assert "HATCH_API_KEY is not set" in capsys.readouterr().err


def test_screenshot_without_chromium_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium there

    assert main(["screenshot", "--output", str(tmp_path / "graph.png")]) == 2

    assert "apt-get install -y chromium" in capsys.readouterr().err
    assert not (tmp_path / "graph.png").exists()
