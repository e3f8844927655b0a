"""`hatch-pipeline`: run the sandbox, the local demo or its screenshot, plan a backfill, or check a configuration."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from hatch_pipeline.contract import DATA_SOURCES, ExportWindow, range_violations
from hatch_pipeline.export_api.ledger import RateLedger, next_slots, organization_key, utc_now
from hatch_pipeline.export_api.planner import SizeEvidence, estimate_daily_bytes, plan_windows
from hatch_pipeline.settings import Settings, SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hatch-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sandbox = commands.add_parser("sandbox", help="serve the local sandbox of the Hatch Bulk Export API")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8787)
    sandbox.add_argument("--api-key", default="sandbox-key", help="the key the sandbox accepts (default sandbox-key)")
    sandbox.add_argument("--rows-per-day", type=int, default=50)
    sandbox.add_argument("--min-export-interval-seconds", type=float, default=0.0)
    sandbox.add_argument("--max-exports-per-day", type=int, default=100)
    sandbox.add_argument("--max-payload-bytes", type=int, default=100_000_000)
    sandbox.add_argument("--new-columns-from", type=date.fromisoformat, default=None, metavar="YYYY-MM-DD")

    demo = commands.add_parser("demo", help="sandbox + local emulators + Dagster UI, all on loopback")
    demo.add_argument("--port", type=int, default=3000, help="port of the Dagster UI (default 3000)")
    demo.add_argument("--days", type=int, default=14, help="how many recent days to materialize first")
    demo.add_argument("--no-ui", action="store_true", help="materialize, report and stop without serving the UI")

    screenshot = commands.add_parser(
        "screenshot", help="photograph the demo's asset graph with headless Chromium (the README's picture)"
    )
    screenshot.add_argument("--output", type=Path, default=Path("docs/asset-graph.png"), help="PNG to write")
    screenshot.add_argument(
        "--asset-output",
        type=Path,
        default=Path("docs/bigquery-asset.png"),
        help="PNG of the hatch/bigquery/contact_history page (Columns, Row count)",
    )
    screenshot.add_argument("--days", type=int, default=14, help="how many recent days to land first")

    plan = commands.add_parser("plan", help="show the export windows a backfill would use (sends no request)")
    plan.add_argument("source", choices=DATA_SOURCES)
    plan.add_argument("start", type=date.fromisoformat, metavar="START")
    plan.add_argument("end", type=date.fromisoformat, metavar="END")

    commands.add_parser("doctor", help="check the HATCH_* configuration and the rate ledger (sends no export)")

    args = parser.parse_args(argv)
    try:
        if args.command == "sandbox":
            return _sandbox(args)
        if args.command == "demo":
            from hatch_pipeline.local.demo import run_demo

            return run_demo(ui_port=args.port, days=args.days, serve_ui=not args.no_ui)
        if args.command == "screenshot":
            from hatch_pipeline.local.screenshot import take_screenshot

            return take_screenshot(args.output, days=args.days, asset_output=args.asset_output)
        if args.command == "plan":
            return _plan(args.source, args.start, args.end)
        return _doctor()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _sandbox(args: argparse.Namespace) -> int:
    from hatch_pipeline.local.sandbox.data import SandboxConfig
    from hatch_pipeline.local.sandbox.server import serve

    config = SandboxConfig(
        api_keys={args.api_key: "org-sandbox"},
        rows_per_day=args.rows_per_day,
        min_export_interval_seconds=args.min_export_interval_seconds,
        max_exports_per_day=args.max_exports_per_day,
        max_payload_bytes=args.max_payload_bytes,
        new_columns_from=args.new_columns_from,
    )
    serve(config, args.host, args.port)
    return 0


def _ledger(settings: Settings, api_key: str) -> RateLedger:
    """The configured ledger, for reading only: planning and diagnosis never reserve a slot."""
    from hatch_pipeline.defs.resources import export_resource

    return export_resource(settings, api_key).ledger()


def _api_key() -> str | None:
    return os.environ.get("HATCH_API_KEY", "").strip() or None


def _plan(source: str, start: date, end: date) -> int:
    settings = Settings.from_env()
    if end < start:
        print(f"error: end {end} is before start {start}", file=sys.stderr)
        return 2
    problems = range_violations(ExportWindow(start, end), datetime.now(settings.zone).date())
    if problems:
        print("error: the range cannot be exported:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    key = _api_key()
    ledger = _ledger(settings, key) if key else None
    observed = ledger.observed_bytes_per_day(source) if ledger else {}
    days = list(ExportWindow(start, end).dates())
    evidence = SizeEvidence(bytes_per_day=observed)
    windows = plan_windows(days, evidence, max_payload_bytes=settings.max_payload_bytes)
    estimated = estimate_daily_bytes(days, evidence, max_payload_bytes=settings.max_payload_bytes)
    estimates = dict(zip(days, estimated, strict=True))
    basis = f"{len(observed)} observed day(s)" if observed else "no observed sizes yet (the first export measures)"
    print(f"{source} {start}..{end}: {len(windows)} export(s), sized from {basis}")
    for window in windows:
        size = f"~{sum(estimates[day] for day in window.dates()) / 1e6:,.1f} MB" if observed else "size unknown"
        print(f"  {window}  {window.days:>3} day(s)  {size}")
    per_day = settings.max_exports_per_day
    print(f"{len(windows)} export(s) take {len(windows) / per_day:.2f} day(s) of quota ({per_day} exports per 24 h)")
    slots = (
        ledger.next_slots(len(windows))
        if ledger
        else next_slots(
            (),
            len(windows),
            now=utc_now(),
            min_interval=timedelta(seconds=settings.min_export_interval_seconds),
            max_per_day=per_day,
        )
    )
    state = "the rate ledger's reservations" if ledger else "an empty rate ledger (HATCH_API_KEY is not set)"
    print(
        f"earliest finish, from {state}: last export at {slots[-1].isoformat(timespec='seconds')} "
        f"(first at {slots[0].isoformat(timespec='seconds')}); a 413 would add an export and a slot"
    )
    return 0


def _doctor() -> int:
    settings = Settings.from_env()
    print("Configuration (HATCH_* variables):")
    for name, value in vars(settings).items():
        print(f"  {name} = {value}")
    if settings.first_partition is None:
        print(
            f"HATCH_FIRST_PARTITION is not set: the partitions start on the project default "
            f"{settings.first_partition_day}. Set it to your deployment's first day (YYYY-MM-DD) once and keep "
            "it: the partition set must not change between deployments.",
            file=sys.stderr,
        )
    key = _api_key()
    if not key:
        print("HATCH_API_KEY is not set: set it to your organization's Bulk Export API key.", file=sys.stderr)
        return 1
    organization = organization_key(key)
    print(f"HATCH_API_KEY is set (organization ledger key {organization}).")
    ledger = _ledger(settings, key)
    next_slot = ledger.next_slot()
    print(f"Rate ledger at {settings.ledger_url}: next export slot {next_slot.isoformat(timespec='seconds')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
