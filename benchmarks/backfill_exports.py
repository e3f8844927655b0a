"""How many rate-limited exports a backfill costs: ours cold and warm, beside the fewest possible and one per day.

The claim: a backfill uses as few exports as the limits allow, and a cold start (no sizes known) pays for it only a
little. Against the sandbox API (today's date, nothing pinned), each scenario exports both sources over a range
ending yesterday four ways, and the sandbox's access log counts, per source, the requests that spent an export
(answers 200, 204 and 413, as the vendor counts them):
- ours, cold: the raw stage (`land_raw`, with a real `HatchExportClient` and a GCS emulator), with an empty rate
  ledger, so nothing is known about sizes: it re-plans after every answer (a 413 proves a lower bound, an export
  measures);
- ours, warm: a refetch of the same range, planned from the sizes the cold run left in the ledger;
- ours, re-run: the same range once more, without refetch: every day is stored, so nothing is exported;
- the baseline, what a hand-written script or a per-day connector does: one export per source and day.
"Fewest" is what a plan that knew every day's true size would need (greedy packing, optimal), from the sandbox's
own per-day sizes (computed from its generator, not counted). The targets: warm = fewest, cold <= fewest + 2.
The counts are then priced at the vendor's real limits (one export per 5 minutes, 100 per day) with the ledger's
own scheduling rule: the wall-clock time the limits alone impose, and the days of quota spent.

Each --scenario DAYS:BYTES is a range length and a payload limit. A limit below the vendor's 100 MB stands for a
proportionally higher volume at the real limit (300 rows/day with a 10 MB limit cuts the same windows as 3000
rows/day with 100 MB), so a volume that needs several windows runs in seconds. The default adds the issue's cold
start: 21 days that need 5 to 6 windows per source.

    .venv/bin/python -m benchmarks.backfill_exports [--rows-per-day 300] [--scenario 180:100000000 ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import httpx

from benchmarks import format_table
from hatch_pipeline.contract import (
    DATA_SOURCES,
    MAX_LOOKBACK_DAYS,
    DataSource,
    ExportWindow,
    latest_allowed_day,
)
from hatch_pipeline.export_api.client import HatchExportClient
from hatch_pipeline.export_api.ledger import LocalLedgerStore, RateLedger, next_slots, organization_key
from hatch_pipeline.export_api.planner import pack_windows
from hatch_pipeline.google_clients import storage_client
from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY, SandboxConfig, render_export
from hatch_pipeline.local.sandbox.server import SandboxServer
from hatch_pipeline.local.services import gcs_emulator
from hatch_pipeline.settings import Settings
from hatch_pipeline.stages.raw import land_raw
from hatch_pipeline.storage.store import ObjectStore

VENDOR: Final = Settings()
"""The vendor's published limits are the settings' defaults."""
VENDOR_INTERVAL: Final = timedelta(seconds=VENDOR.min_export_interval_seconds)

_EXPORT_STATUSES: Final = frozenset({200, 204, 413})
"""Answers that spend an export (see the sandbox's ExportCounter); 400, 401 and 429 do not."""
_UNLIMITED: Final = 1_000_000
"""Exports per day allowed by the sandbox and the benchmark's ledger: the limits are priced, not waited for."""
_LEDGER_INTERVAL: Final = timedelta(milliseconds=1)
_MB: Final = 1_000_000
_PROJECT: Final = "hatch-bench"
_DEFAULT_SCENARIOS: Final = ("180:100000000", "180:10000000", "21:700000")


@dataclass(frozen=True)
class Phase:
    """One way of exporting the range, as the sandbox saw it, per source."""

    name: str
    exports: dict[str, int]
    too_large: dict[str, int]
    """Of `exports`, how many were answered 413 (each spent an export all the same)."""
    seconds: float


def backfill_ours(
    client: HatchExportClient, ledger: RateLedger, store: ObjectStore, days: ExportWindow, limit: int, *, refetch: bool
) -> None:
    """What the raw asset does: `land_raw` for each source (a refetch re-exports days already stored)."""
    since = datetime.now(UTC) if refetch else None
    for source in DATA_SOURCES:
        land_raw(
            source,
            days,
            client=client,
            ledger=ledger,
            store=store,
            max_payload_bytes=limit,
            today=datetime.now(UTC).date(),
            refetch_since=since,
        )


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
    """Run `work` and count, from the sandbox's access log, the exports it spent per source."""
    server.clear_access_log()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    log = server.access_log
    return Phase(
        name=name,
        exports={s: sum(r.status in _EXPORT_STATUSES for r in log if r.data_source == s) for s in DATA_SOURCES},
        too_large={s: sum(r.status == 413 for r in log if r.data_source == s) for s in DATA_SOURCES},
        seconds=seconds,
    )


def span_at_vendor_limits(exports: int) -> timedelta:
    """From the first to the last request of `exports` back-to-back exports, by the ledger's scheduling rule."""
    start = datetime(2000, 1, 1, tzinfo=UTC)
    slots = next_slots((), exports, now=start, min_interval=VENDOR_INTERVAL, max_per_day=VENDOR.max_exports_per_day)
    return slots[-1] - slots[0] if slots else timedelta(0)


def fewest_exports(source: DataSource, days: ExportWindow, config: SandboxConfig, limit: int) -> int:
    """What a plan knowing each day's true size needs: the sandbox's JSON of a window is its days' blocks joined,
    so a window's size is the sum of its days' sizes, and greedy packing against the limit is optimal."""
    dates = list(days.dates())
    sizes = [
        sum(len(chunk) for chunk in render_export(source, ExportWindow(day, day), "json", config)) for day in dates
    ]
    return len(pack_windows(dates, sizes, budget=limit))


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
    """The three ways of exporting one range, and the fewest exports each source needs."""

    cold: Phase
    warm: Phase
    rerun: Phase
    baseline: Phase
    fewest: dict[str, int]


def run_scenario(rows_per_day: int, days: ExportWindow, limit: int) -> Scenario:
    """A fresh sandbox and an empty ledger; ours cold, ours warm, then the per-day baseline."""
    config = SandboxConfig(
        rows_per_day=rows_per_day,
        max_payload_bytes=limit,
        max_exports_per_day=_UNLIMITED,
        min_export_interval_seconds=0,
    )
    with (
        tempfile.TemporaryDirectory(prefix="hatch-bench-backfill-") as scratch,
        SandboxServer(config) as server,
        gcs_emulator(Path(scratch) / "gcs") as gcs_endpoint,
    ):
        storage = storage_client(_PROJECT, gcs_endpoint)
        store = ObjectStore(storage, storage.create_bucket("bench").name, "hatch")
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
            cold = run_phase(
                server,
                "ours, cold (no sizes known)",
                lambda: backfill_ours(client, ledger, store, days, limit, refetch=False),
            )
            warm = run_phase(
                server,
                "ours, warm (a refetch, sizes in the ledger)",
                lambda: backfill_ours(client, ledger, store, days, limit, refetch=True),
            )
            rerun = run_phase(
                server,
                "ours, re-run (all stored)",
                lambda: backfill_ours(client, ledger, store, days, limit, refetch=False),
            )
        baseline = run_phase(server, "baseline (one export per day)", lambda: backfill_per_day(server.base_url, days))
    fewest: dict[str, int] = {source: fewest_exports(source, days, config, limit) for source in DATA_SOURCES}
    return Scenario(cold, warm, rerun, baseline, fewest)


def print_scenario(scenario: Scenario, rows_per_day: int, days: ExportWindow, limit: int) -> None:
    equivalent = rows_per_day * VENDOR.max_payload_bytes / limit
    print(
        f"== {rows_per_day} rows/day per source, payload limit {limit / _MB:g} MB "
        f"(at the vendor's {VENDOR.max_payload_bytes / _MB:g} MB: {equivalent:,.0f} rows/day); "
        f"{days.days} days {days}, json"
    )
    cold, warm, rerun, baseline = scenario.cold, scenario.warm, scenario.rerun, scenario.baseline
    rows = []
    for source in DATA_SOURCES:
        fewest = scenario.fewest[source]
        rows.append(
            [
                source,
                fewest,
                f"{cold.exports[source]} ({cold.too_large[source]})",
                f"{warm.exports[source]} ({warm.too_large[source]})",
                rerun.exports[source],
                baseline.exports[source],
                "met" if cold.exports[source] <= fewest + 2 else "MISSED",
                "met" if warm.exports[source] == fewest else "MISSED",
            ]
        )
    header = (
        "source",
        "fewest",
        "cold (of which 413)",
        "warm (of which 413)",
        "re-run",
        "one per day",
        "cold <= fewest+2",
        "warm = fewest",
    )
    print(format_table(header, rows))
    priced = [
        [
            phase.name,
            sum(phase.exports.values()),
            f"{phase.seconds:.1f}",
            _duration(span_at_vendor_limits(sum(phase.exports.values()))),
            f"{sum(phase.exports.values()) / VENDOR.max_exports_per_day:.2f}",
        ]
        for phase in (cold, warm, rerun, baseline)
    ]
    print(
        format_table(
            ("both sources", "exports", "seconds here", "wall-clock at vendor limits", "days of quota"), priced
        )
    )
    totals = {phase.name: sum(phase.exports.values()) for phase in (cold, warm, baseline)}
    fewest_total = sum(scenario.fewest.values())
    print(
        f"ours/baseline: cold {totals[cold.name] / totals[baseline.name]:.3f}, warm "
        f"{totals[warm.name] / totals[baseline.name]:.3f}; over the fewest possible ({fewest_total}): "
        f"cold +{totals[cold.name] - fewest_total}, warm +{totals[warm.name] - fewest_total}\n"
    )


def _scenario(value: str) -> tuple[int, int]:
    days, _, limit = value.partition(":")
    try:
        parsed = int(days), int(limit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not DAYS:BYTES, e.g. 180:10000000") from None
    if not 1 <= parsed[0] <= MAX_LOOKBACK_DAYS or parsed[1] < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: DAYS must be 1 to {MAX_LOOKBACK_DAYS}, BYTES positive")
    return parsed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-day", type=int, default=300, help="rows each source holds per day")
    parser.add_argument(
        "--scenario",
        type=_scenario,
        nargs="+",
        default=[_scenario(value) for value in _DEFAULT_SCENARIOS],
        metavar="DAYS:BYTES",
        help="days in the range (ending yesterday) and the payload limit of each scenario",
    )
    args = parser.parse_args(argv)
    if args.rows_per_day < 1:
        parser.error("--rows-per-day must be positive")
    today: date = datetime.now(UTC).date()
    last = latest_allowed_day(today)
    print(
        f"Exports spent on a backfill, per source; the vendor allows one per {_duration(VENDOR_INTERVAL)} and "
        f"{VENDOR.max_exports_per_day} per day. Targets: warm = fewest, cold <= fewest + 2 (413s included).\n"
    )
    for day_count, limit in args.scenario:
        days = ExportWindow(last - timedelta(days=day_count - 1), last)
        print_scenario(run_scenario(args.rows_per_day, days, limit), args.rows_per_day, days, limit)


if __name__ == "__main__":
    main()
