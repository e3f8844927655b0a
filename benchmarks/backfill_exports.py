"""How many rate-limited exports a backfill costs: ours against one export per day.

The claim: a backfill uses as few exports as the limits allow. Against the sandbox API (today's date, nothing
pinned), a range ending yesterday of both sources is exported three ways, and the sandbox's access log counts the
requests that spent an export (answers 200, 204 and 413, as the vendor counts them):
- ours, cold: `plan_windows` + `export_windows` driving a real `HatchExportClient`, with an empty rate ledger, so
  nothing is known about sizes yet and a 413 splits a window;
- ours, warm: the same again, planned from the sizes the cold run left in the ledger;
- the baseline, what a hand-written script or a per-day connector does: one export per source and day.
The counts are then priced at the vendor's real limits (one export per 5 minutes, 100 per day) with the ledger's
own scheduling rule: the wall-clock time the limits alone impose, and the days of quota spent.

Each --max-payload-bytes value is one scenario. A limit below the vendor's 100 MB stands for a proportionally
higher volume at the real limit (300 rows/day with a 10 MB limit cuts the same windows as 3000 rows/day with
100 MB), so a volume that needs several windows runs in seconds.

    .venv/bin/python -m benchmarks.backfill_exports [--rows-per-day 300] [--days 180] [--max-payload-bytes B ...]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import httpx

from benchmarks import format_table
from hatch_pipeline.export_api.client import ExportedFile, ExportOutcome, HatchExportClient
from hatch_pipeline.export_api.ledger import LocalLedgerStore, RateLedger, earliest_free_slot, organization_key
from hatch_pipeline.export_api.planner import export_windows, plan_windows
from hatch_pipeline.export_api.windows import (
    DATA_SOURCES,
    MAX_LOOKBACK_DAYS,
    MAX_WINDOW_DAYS,
    DataSource,
    ExportWindow,
    latest_allowed_day,
)
from hatch_pipeline.sandbox.data import DEFAULT_API_KEY, SandboxConfig
from hatch_pipeline.sandbox.server import SandboxServer
from hatch_pipeline.settings import Settings

VENDOR: Final = Settings()
"""The vendor's published limits are the settings' defaults."""
VENDOR_INTERVAL: Final = timedelta(seconds=VENDOR.min_export_interval_seconds)

_EXPORT_STATUSES: Final = frozenset({200, 204, 413})
"""Answers that spend an export (see the sandbox's ExportCounter); 400, 401 and 429 do not."""
_UNLIMITED: Final = 1_000_000
"""Exports per day allowed by the sandbox and the benchmark's ledger: the limits are priced, not waited for."""
_LEDGER_INTERVAL: Final = timedelta(milliseconds=1)
_MB: Final = 1_000_000


@dataclass(frozen=True)
class Phase:
    """One way of exporting the range, as the sandbox saw it."""

    name: str
    exports: int
    too_large: int
    """Of `exports`, how many were answered 413 (each spent an export all the same)."""
    seconds: float


def backfill_ours(client: HatchExportClient, ledger: RateLedger, days: ExportWindow, limit: int, workdir: Path) -> None:
    """What the raw stage does: plan from the ledger's observed sizes, export, split on 413."""
    for source in DATA_SOURCES:
        windows = plan_windows(
            days.start, days.end, bytes_per_day=ledger.observed_bytes_per_day(source), max_payload_bytes=limit
        )

        def export(window: ExportWindow, source: str = source) -> ExportOutcome:
            outcome = client.export(source, window, workdir)
            if isinstance(outcome, ExportedFile):
                outcome.path.unlink()
            return outcome

        export_windows(windows, export, source=source)


def backfill_per_day(base_url: str, days: ExportWindow) -> None:
    """The baseline: a loop over sources and days, one plain GET each, as a hand-written script does it."""
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        for source in DATA_SOURCES:
            for day in days.dates():
                params = {"data_source": source, "start_date": day.isoformat(), "end_date": day.isoformat()}
                response = http.get("export-data", params=params)
                if response.status_code not in (200, 204):
                    raise RuntimeError(f"the per-day export of {source} for {day} got HTTP {response.status_code}")


def run_phase(server: SandboxServer, name: str, work: Callable[[], None]) -> Phase:
    """Run `work` and count, from the sandbox's access log, the exports it spent."""
    server.clear_access_log()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    statuses = [record.status for record in server.access_log]
    return Phase(
        name=name,
        exports=sum(status in _EXPORT_STATUSES for status in statuses),
        too_large=statuses.count(413),
        seconds=seconds,
    )


def span_at_vendor_limits(exports: int) -> timedelta:
    """From the first to the last request of `exports` back-to-back exports, by the ledger's scheduling rule."""
    start = datetime(2000, 1, 1, tzinfo=UTC)
    slots: list[datetime] = []
    for _ in range(exports):
        now = slots[-1] if slots else start
        slots.append(
            earliest_free_slot(
                slots, now=now, not_before=None, min_interval=VENDOR_INTERVAL, max_per_day=VENDOR.max_exports_per_day
            )
        )
    return slots[-1] - slots[0] if slots else timedelta(0)


def fewest_exports(days: ExportWindow, total_bytes: float, limit: int) -> int:
    """A lower bound for one source: every export spans at most 180 days and carries at most `limit` bytes."""
    return max(math.ceil(days.days / MAX_WINDOW_DAYS), math.ceil(total_bytes / limit))


def _duration(span: timedelta) -> str:
    minutes = round(span.total_seconds() / 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days} d"] if days else []
    if days or hours:
        parts.append(f"{hours} h")
    parts.append(f"{minutes} min")
    return " ".join(parts)


@dataclass(frozen=True)
class Scenario:
    """The three ways of exporting one range, and the true uncompressed bytes of each source over it."""

    cold: Phase
    warm: Phase
    baseline: Phase
    bytes_per_source: dict[DataSource, float]


def run_scenario(rows_per_day: int, days: ExportWindow, limit: int) -> Scenario:
    """A fresh sandbox and an empty ledger; ours cold, ours warm, then the per-day baseline."""
    config = SandboxConfig(
        rows_per_day=rows_per_day,
        max_payload_bytes=limit,
        max_exports_per_day=_UNLIMITED,
        min_export_interval_seconds=0,
    )
    with tempfile.TemporaryDirectory(prefix="hatch-bench-backfill-") as scratch, SandboxServer(config) as server:
        ledger = RateLedger(
            LocalLedgerStore(Path(scratch) / "ledger"),
            organization=organization_key(DEFAULT_API_KEY),
            min_interval=_LEDGER_INTERVAL,
            max_per_day=_UNLIMITED,
            max_wait=timedelta(minutes=1),
        )
        with HatchExportClient(
            api_key=DEFAULT_API_KEY, base_url=server.base_url, ledger=ledger, max_payload_bytes=limit
        ) as client:

            def ours() -> None:
                backfill_ours(client, ledger, days, limit, Path(scratch) / "downloads")

            cold = run_phase(server, "ours, cold (no sizes known)", ours)
            warm = run_phase(server, "ours, warm (sizes in the ledger)", ours)
        baseline = run_phase(server, "baseline (one export per day)", lambda: backfill_per_day(server.base_url, days))
        # Every day was exported whole by now, so the ledger holds each day's true size (newest observation wins).
        sizes = {source: math.fsum(ledger.observed_bytes_per_day(source).values()) for source in DATA_SOURCES}
    return Scenario(cold, warm, baseline, sizes)


def print_scenario(scenario: Scenario, rows_per_day: int, days: ExportWindow, limit: int) -> None:
    equivalent = rows_per_day * VENDOR.max_payload_bytes / limit
    print(
        f"== {rows_per_day} rows/day per source, payload limit {limit / _MB:g} MB "
        f"(at the vendor's {VENDOR.max_payload_bytes / _MB:g} MB: {equivalent:,.0f} rows/day); "
        f"{days.days} days {days}, {', '.join(DATA_SOURCES)}, json"
    )
    bound = sum(fewest_exports(days, size, limit) for size in scenario.bytes_per_source.values())
    sizes = ", ".join(f"{source} {size / _MB:.1f} MB" for source, size in scenario.bytes_per_source.items())
    print(f"uncompressed data: {sizes}; fewest exports the 180-day and payload limits allow: {bound}")
    phases = (scenario.cold, scenario.warm, scenario.baseline)
    rows = [
        [
            phase.name,
            phase.exports,
            phase.too_large,
            f"{phase.seconds:.1f}",
            _duration(span_at_vendor_limits(phase.exports)),
            f"{phase.exports / VENDOR.max_exports_per_day:.2f}",
        ]
        for phase in phases
    ]
    header = ("way", "exports", "of which 413", "seconds here", "wall-clock at vendor limits", "days of quota")
    print(format_table(header, rows))
    cold, warm, baseline = (phase.exports for phase in phases)
    print(
        f"ours/baseline: cold {cold / baseline:.3f} ({baseline / cold:.0f}x fewer), "
        f"warm {warm / baseline:.3f} ({baseline / warm:.0f}x fewer); warm/fewest possible {warm / bound:.2f}\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-day", type=int, default=300, help="rows each source holds per day")
    parser.add_argument("--days", type=int, default=MAX_LOOKBACK_DAYS, help="days in the range, ending yesterday")
    parser.add_argument(
        "--max-payload-bytes",
        type=int,
        nargs="+",
        default=[VENDOR.max_payload_bytes, VENDOR.max_payload_bytes // 10],
        help="payload limit of each scenario; below 100 MB it stands for a proportionally higher volume",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.days <= MAX_LOOKBACK_DAYS:
        parser.error(f"--days must be between 1 and {MAX_LOOKBACK_DAYS}: the API serves no older days")
    if args.rows_per_day < 1 or min(args.max_payload_bytes) < 1:
        parser.error("--rows-per-day and --max-payload-bytes must be positive")
    today: date = datetime.now(UTC).date()
    last = latest_allowed_day(today)
    days = ExportWindow(last - timedelta(days=args.days - 1), last)
    print(
        f"Exports spent on a backfill; the vendor allows one per {_duration(VENDOR_INTERVAL)} and "
        f"{VENDOR.max_exports_per_day} per day.\n"
    )
    for limit in args.max_payload_bytes:
        print_scenario(run_scenario(args.rows_per_day, days, limit), args.rows_per_day, days, limit)


if __name__ == "__main__":
    main()
