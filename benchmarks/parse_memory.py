"""Throughput and peak memory of turning an export ZIP into Parquet: ours beside the tools a user would pick instead.

The export is the sandbox's conversation_items rows with hostile text in them (HOSTILE_BODIES, HOSTILE_NAMES), as a
vendor's writer sends it: Python's csv module with minimal quoting and CRLF, or one JSON object a line. Every
variant starts from the same stored ZIP (so each pays for decompressing it) and writes Parquet:
- ours: `hatch_pipeline.parsing.export.parse_export`, typed, checked, one file per day, every NDJSON key kept;
- polars: bare polars, member extracted to a file, `scan_ndjson` / `scan_csv` with polars' defaults, the day
  column added, `sink_parquet` partitioned by day (what ours must reach: about the same speed);
- polars-all: the same with the NDJSON schema inferred from every line (`infer_schema_length=None`), as keeping
  a column that first appears deep in the file needs (CSV: the same as polars);
- read-all: the obvious polars script: read the member into memory, `read_ndjson` / `read_csv`, `partition_by`;
- dlt: a dlt resource of dicts (json / csv module) into dlt's filesystem destination as Parquet;
- naive: json / csv module, rows grouped by day in dicts, one polars DataFrame written per day.

Each variant runs in a fresh interpreter, so its peak resident set (VmHWM from /proc/self/status) is its own and
not the generator's or the other variant's. Both pay the same imports; the table shows the resident set at the
start too. The resident set also counts pages of files the process maps (polars memory-maps what it scans), which
the kernel can drop under pressure; the peak of anonymous memory (RssAnon, sampled every few milliseconds) is the
part that cannot be dropped, so it is shown beside it.

    .venv/bin/python -m benchmarks.parse_memory [--mb 10 100] [--format json|csv|both] [--variants ...]

Writes the figures to benchmarks/results.json ("parse" key) as well as printing the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Final

import polars as pl

from benchmarks import format_table
from hatch_pipeline.contract import DataSource, ExportWindow, OutputFormat
from hatch_pipeline.local.sandbox.data import SandboxConfig, rows_for_day
from hatch_pipeline.parsing.export import parse_export
from hatch_pipeline.schemas import SCHEMAS

SOURCE: Final[DataSource] = "conversation_items"
WINDOW: Final = ExportWindow(date(2026, 1, 1), date(2026, 1, 1) + timedelta(days=179))
"""180 days, the longest export; fixed, so every run on every day parses the same bytes."""

_MB: Final = 1_000_000
_SAMPLE_ROWS: Final = 2_000
_SAMPLE_SECONDS: Final = 0.005
_REPO_ROOT: Final = Path(__file__).resolve().parents[1]
_HEADER: Final = (
    "variant",
    "input MB",
    "rows",
    "files",
    "seconds",
    "MB/s",
    "x polars",
    "RSS growth MB",
    "anon growth MB",
    "anon / input",
)
RESULTS: Final = Path(__file__).with_name("results.json")
_CHILD_CODE: Final = "import sys; from benchmarks.parse_memory import child_main; child_main(sys.argv[1:])"


@dataclass(frozen=True)
class Export:
    """A generated export ZIP and the size of its one member."""

    path: Path
    output_format: OutputFormat
    rows_per_day: int
    uncompressed_bytes: int


@dataclass(frozen=True)
class Measurement:
    """What one variant did in its own process."""

    rows: int
    day_files: int
    seconds: float
    start_rss_mb: float
    peak_rss_mb: float
    start_anonymous_mb: float
    peak_anonymous_mb: float


def write_export(directory: Path, output_format: OutputFormat, target_bytes: int) -> Export:
    """Write the sandbox's rows for WINDOW, their text made hostile, into a ZIP of about `target_bytes`
    uncompressed, as a vendor's writer would: Python's csv module (minimal quoting, CRLF) or one JSON object a line."""
    rows_per_day = _rows_per_day_for(output_format, target_bytes)
    stem = f"{SOURCE}_{WINDOW.start.isoformat()}_{WINDOW.end.isoformat()}"
    path = directory / output_format / f"{stem}.zip"
    path.parent.mkdir()
    written = 0
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open(f"{stem}.{output_format}", "w", force_zip64=True) as member,
    ):
        for chunk in hostile_export(WINDOW, output_format, rows_per_day):
            member.write(chunk)
            written += len(chunk)
    return Export(path, output_format, rows_per_day, written)


HOSTILE_BODIES: Final = (
    "",
    'Hi, thanks for your message: "see you at 10, room 4"!\r\nBest,\r\nThe team',
    'Order #{n}, 2 x "Deluxe, XL"\n- shipped\n- paid, with a 10% discount',
    "Réunion à 10h, d'accord? «très bien» — 日本語のテキスト, emoji 🙂✓",
    "plain short answer",
    'He said ""no"", then: yes,\nthen maybe,\r\n"final"',
    "a, b, c, d, e, f, g, h",
    "Dear customer,\r\n\r\n"
    + 'Your order, "#{n}", has shipped; track it at the link below.\r\n' * 25
    + "-- \r\nSupport",
    '> On Monday, "Ann" wrote:\n> ' + 'Thanks, we\'ll call back; "soon", I promise.\n> ' * 150,
)
"""Text as people write it: empty, quotes (doubled by a CSV writer), commas, CRLF and LF inside a value, unicode,
an email of 27 lines, a quoted reply thread of 150 lines (7 kB). One in nine rows is plain: the rest need quoting."""
HOSTILE_NAMES: Final = ('Acme, Inc. "West"', "Müller & Söhne, Zürich", "Plain Workspace", "")


def hostile_export(window: ExportWindow, output_format: OutputFormat, rows_per_day: int) -> Iterator[bytes]:
    """The sandbox's conversation_items rows with their body and workspace name drawn from HOSTILE_BODIES and
    HOSTILE_NAMES (seeded: every run writes the same bytes), one chunk per day (the CSV header first)."""
    config = SandboxConfig(rows_per_day=rows_per_day)
    columns = list(SCHEMAS[SOURCE].columns)
    rng = random.Random(0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    if output_format == "csv":
        writer.writerow(columns)
    for day in window.dates():
        for row in rows_for_day(SOURCE, day, config):
            body = rng.choice(HOSTILE_BODIES).replace("{n}", str(rng.randrange(10_000)))
            row = row | {"body": body, "workspace_name": rng.choice(HOSTILE_NAMES)}
            if output_format == "csv":
                writer.writerow(_csv_value(row.get(column)) for column in columns)
            else:
                buffer.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()


def _csv_value(value: object) -> object:
    """What a vendor's CSV writer puts in a cell: null as an empty field, booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _rows_per_day_for(output_format: OutputFormat, target_bytes: int) -> int:
    """Rows per day that make the whole window about `target_bytes`, from the size of one sample day."""
    sample_day = ExportWindow(WINDOW.start, WINDOW.start)
    bytes_per_row = sum(len(chunk) for chunk in hostile_export(sample_day, output_format, _SAMPLE_ROWS)) / _SAMPLE_ROWS
    return max(1, round(target_bytes / (bytes_per_row * WINDOW.days)))


def parse_ours(zip_path: Path, out_dir: Path) -> int:
    parsed = parse_export(
        zip_path,
        source=SOURCE,
        window=WINDOW,
        out_dir=out_dir,
        timezone="UTC",
        source_file=zip_path.as_uri(),
        loaded_at=datetime.now(UTC),
    )
    return parsed.rows


def _day_expression() -> pl.Expr:
    column = SCHEMAS[SOURCE].date_column
    return pl.col(column).str.to_datetime(time_zone="UTC").dt.date().alias("_export_date")


def _extract(zip_path: Path, out_dir: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive, archive.open(archive.namelist()[0]) as packed:
        member = out_dir / archive.namelist()[0]
        with member.open("wb") as unpacked:
            shutil.copyfileobj(packed, unpacked, 1 << 20)
    return member


def parse_polars(zip_path: Path, out_dir: Path, *, every_column: bool = False) -> int:
    """Bare polars: extract, scan with defaults, add the day, sink partitioned by day. `every_column`: infer the
    NDJSON schema from every line, not the first 100 (polars' default misses a column that appears later)."""
    member = _extract(zip_path, out_dir)
    if member.suffix == ".csv":
        frame = pl.scan_csv(member)
    else:
        frame = pl.scan_ndjson(member, infer_schema_length=None if every_column else 100)
    frame.with_columns(_day_expression()).sink_parquet(
        pl.PartitionBy(out_dir, key="_export_date", approximate_bytes_per_file=None), mkdir=True
    )
    member.unlink()
    return sum(pl.scan_parquet(path).select(pl.len()).collect().item() for path in out_dir.rglob("*.parquet"))


def parse_read_all(zip_path: Path, out_dir: Path) -> int:
    """The obvious hand-written script: everything in memory, types inferred, one write per day."""
    with zipfile.ZipFile(zip_path) as archive:
        name = archive.namelist()[0]
        data = archive.read(name)
    frame = pl.read_csv(data) if name.endswith(".csv") else pl.read_ndjson(data)
    frame = frame.with_columns(_day_expression())
    for (day,), rows in frame.partition_by("_export_date", as_dict=True).items():
        target = out_dir / f"export_date={day}" / "part-0.parquet"
        target.parent.mkdir(parents=True)
        rows.write_parquet(target)
    return frame.height


def _records(zip_path: Path) -> Iterator[dict[str, object]]:
    """The member's records as dicts, with the standard library, streamed from the ZIP."""
    with zipfile.ZipFile(zip_path) as archive:
        name = archive.namelist()[0]
        with archive.open(name) as packed, io.TextIOWrapper(packed, encoding="utf-8-sig", newline="") as text:
            if name.endswith(".csv"):
                csv.field_size_limit(1 << 30)
                yield from csv.DictReader(text)
            else:
                yield from (json.loads(line) for line in text if line.strip())


def parse_naive(zip_path: Path, out_dir: Path) -> int:
    """json / csv module, rows grouped by day in memory, one polars DataFrame per day."""
    by_day: dict[str, list[dict[str, object]]] = defaultdict(list)
    column = SCHEMAS[SOURCE].date_column
    for record in _records(zip_path):
        by_day[str(record[column])[:10]].append(record)
    for day, rows in by_day.items():
        target = out_dir / f"export_date={day}" / "part-0.parquet"
        target.parent.mkdir(parents=True)
        pl.DataFrame(rows, infer_schema_length=None).write_parquet(target)
    return sum(len(rows) for rows in by_day.values())


def parse_dlt(zip_path: Path, out_dir: Path) -> int:
    """A dlt resource of dicts into dlt's filesystem destination, as Parquet (dlt is in the `bench` group)."""
    import dlt

    counted = 0

    def records() -> Iterator[dict[str, object]]:
        nonlocal counted
        for record in _records(zip_path):
            counted += 1
            yield record

    pipeline = dlt.pipeline(
        pipeline_name="hatch_bench",
        pipelines_dir=str(out_dir / ".dlt"),
        destination=dlt.destinations.filesystem(bucket_url=out_dir.as_uri()),
        dataset_name="hatch",
    )
    pipeline.run(dlt.resource(records(), name=SOURCE), loader_file_format="parquet")
    return counted


VARIANTS: Final[dict[str, Callable[[Path, Path], int]]] = {
    "ours": parse_ours,
    "polars": parse_polars,
    "polars-all": partial(parse_polars, every_column=True),
    "read-all": parse_read_all,
    "dlt": parse_dlt,
    "naive": parse_naive,
}


def child_main(argv: Sequence[str]) -> None:
    """Run one variant in this (fresh) process and print its Measurement as JSON."""
    variant, zip_path, out_dir = argv
    start_rss = _status_mb("VmRSS")
    start_anonymous = _status_mb("RssAnon")
    started = time.perf_counter()
    with _AnonymousPeak() as anonymous:
        rows = VARIANTS[variant](Path(zip_path), Path(out_dir))
    seconds = time.perf_counter() - started
    measured = Measurement(
        rows=rows,
        day_files=sum(1 for path in Path(out_dir).rglob("*.parquet") if ".dlt" not in path.parts),
        seconds=seconds,
        start_rss_mb=start_rss,
        peak_rss_mb=_status_mb("VmHWM"),
        start_anonymous_mb=start_anonymous,
        peak_anonymous_mb=anonymous.peak_mb,
    )
    print(json.dumps(asdict(measured)))


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MB.

    VmHWM is the peak of this process's own address space; ru_maxrss could carry the parent's peak over exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            kib = int(value.split()[0])
            return kib * 1024 / _MB
    raise RuntimeError(f"/proc/self/status has no {field}; this benchmark needs Linux")


class _AnonymousPeak:
    """Samples RssAnon on a thread while the block runs: the kernel keeps no peak of it, only of the whole RSS."""

    def __init__(self) -> None:
        self.peak_mb = _status_mb("RssAnon")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _AnonymousPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, _status_mb("RssAnon"))
            if self._done.wait(_SAMPLE_SECONDS):
                return


def measure(variant: str, export: Export, out_dir: Path) -> Measurement:
    """Run `variant` on `export` in a fresh interpreter, so its peak memory is its own."""
    out_dir.mkdir()
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD_CODE, variant, str(export.path), str(out_dir)],
        cwd=_REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the {variant} parse of {export.path} failed:\n{completed.stderr}")
    shutil.rmtree(out_dir)
    return Measurement(**json.loads(completed.stdout.splitlines()[-1]))


def _summary(rounds: Sequence[Measurement]) -> Measurement:
    """A variant's rounds as one: the median time, and the memory of the round that grew most (the target is a
    ceiling)."""
    worst = max(rounds, key=lambda result: result.peak_anonymous_mb - result.start_anonymous_mb)
    return replace(worst, seconds=statistics.median(result.seconds for result in rounds))


def _paired_speed(baseline: Sequence[Measurement], rounds: Sequence[Measurement]) -> float:
    """Throughput against the baseline as the median of each round's ratio: a variant is compared with the baseline
    run just before or after it, so the machine's speed drifting over minutes (a shared host) cancels out."""
    return statistics.median(base.seconds / result.seconds for base, result in zip(baseline, rounds, strict=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, nargs="+", default=[10.0, 100.0], help="export sizes, uncompressed MB")
    parser.add_argument("--format", choices=("json", "csv", "both"), default="both", help="export format(s)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--repeat", type=int, default=5, help="rounds of every variant (medians count: shared machine)")
    args = parser.parse_args(argv)
    formats: tuple[OutputFormat, ...] = ("json", "csv") if args.format == "both" else (args.format,)

    print(f"Parsing a {WINDOW.days}-day {SOURCE} export ZIP into Parquet ({WINDOW}); each variant in a fresh process.")
    print("growth = peak above the process's start (RSS: VmHWM, counts mapped file pages; anon: RssAnon). MB = 10^6.\n")
    table: list[list[object]] = []
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="hatch-bench-parse-") as scratch:
        for mb in args.mb:
            for output_format in formats:
                directory = Path(scratch) / f"{mb:g}"
                directory.mkdir(exist_ok=True)
                export = write_export(directory, output_format, int(mb * _MB))
                input_mb = export.uncompressed_bytes / _MB
                # Rounds of every variant in turn, so a busy spell on a shared machine hits all of them alike.
                runs: dict[str, list[Measurement]] = defaultdict(list)
                for round_ in range(args.repeat):
                    for name in args.variants:
                        runs[name].append(measure(name, export, directory / f"{output_format}-{name}-{round_}"))
                for name, rounds in runs.items():
                    result = _summary(rounds)
                    speed = _paired_speed(runs["polars"], rounds) if "polars" in runs else float("nan")
                    anon_growth = result.peak_anonymous_mb - result.start_anonymous_mb
                    table.append(
                        [
                            f"{output_format} {mb:g} MB {name}",
                            f"{input_mb:.1f}",
                            result.rows,
                            result.day_files,
                            f"{result.seconds:.2f}",
                            f"{input_mb / result.seconds:.0f}",
                            f"{speed:.2f}x",
                            f"{result.peak_rss_mb - result.start_rss_mb:.0f}",
                            f"{anon_growth:.0f}",
                            f"{anon_growth / input_mb:.2f}",
                        ]
                    )
                    results.append(
                        {"format": output_format, "input_mb": round(input_mb, 1), "variant": name}
                        | {"rounds": len(rounds)}
                        | asdict(result)
                        | {"mb_per_s": round(input_mb / result.seconds, 1), "speed_vs_polars": round(speed, 2)}
                    )
    print(format_table(_HEADER, table))
    print("\nx polars: throughput relative to bare polars on the same ZIP (above 1 is faster). anon / input: anonymous")
    print("memory growth per MB of uncompressed input (the target for ours is at most 1).")
    imports = {name: import_seconds(statement, args.repeat) for name, statement in IMPORTS.items()}
    print("\nA fresh process's imports before it can parse (not in `seconds` above; median of the rounds): ", end="")
    print(", ".join(f"{name} {seconds:.2f} s" for name, seconds in imports.items()))
    document = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps(document | {"parse": results, "parse_imports": imports}, indent=1) + "\n")


IMPORTS: Final = {"polars": "import polars", "ours": "from hatch_pipeline.parsing.export import parse_export"}
"""What each of the two main variants imports in a fresh process before it can parse."""


def import_seconds(statement: str, rounds: int) -> float:
    """The median time a fresh interpreter takes to run `statement`, beyond starting and stopping (`pass`)."""

    def run(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=_REPO_ROOT, check=True)
        return time.perf_counter() - started

    return statistics.median(run(statement) - run("pass") for _ in range(rounds))


if __name__ == "__main__":
    main()
