"""Peak memory of turning a ~100 MB export ZIP into one Parquet file per day: ours against a hand-written script.

The claim: a 100 MB export must not need gigabytes. The baseline is what a hand-written script does: read the
whole ZIP member into memory, `pl.read_ndjson` / `pl.read_csv` it, add the day column and write each day's rows
from an in-memory `partition_by`. Ours is `hatch_pipeline.parsing.parse_export`, which streams.

Each variant runs in a fresh interpreter, so its peak resident set (VmHWM from /proc/self/status) is its own and
not the generator's or the other variant's. Both pay the same imports; the table shows the resident set at the
start too. The resident set also counts pages of files the process maps (polars memory-maps what it scans), which
the kernel can drop under pressure; the peak of anonymous memory (RssAnon, sampled every few milliseconds) is the
part that cannot be dropped, so it is shown beside it.

    .venv/bin/python -m benchmarks.parse_memory [--mb 100] [--format json|csv|both]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import polars as pl

from benchmarks import format_table
from hatch_pipeline.export_api.windows import DataSource, ExportWindow, OutputFormat
from hatch_pipeline.parsing import parse_export
from hatch_pipeline.sandbox.data import SandboxConfig, render_export
from hatch_pipeline.schemas import SCHEMAS

SOURCE: Final[DataSource] = "conversation_items"
WINDOW: Final = ExportWindow(date(2026, 1, 1), date(2026, 1, 1) + timedelta(days=179))
"""180 days, the longest export; fixed, so every run on every day parses the same bytes."""

_MB: Final = 1_000_000
_SAMPLE_ROWS: Final = 200
_SAMPLE_SECONDS: Final = 0.005
_REPO_ROOT: Final = Path(__file__).resolve().parents[1]
_HEADER: Final = (
    "variant",
    "input MB",
    "zip MB",
    "rows",
    "day files",
    "start RSS MB",
    "peak RSS MB",
    "peak anon MB",
    "seconds",
)
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
    peak_anonymous_mb: float


def write_export(directory: Path, output_format: OutputFormat, target_bytes: int) -> Export:
    """Stream the sandbox's rows for WINDOW into a ZIP of about `target_bytes` uncompressed, as the vendor sends it."""
    rows_per_day = _rows_per_day_for(output_format, target_bytes)
    config = SandboxConfig(rows_per_day=rows_per_day)
    stem = f"{SOURCE}_{WINDOW.start.isoformat()}_{WINDOW.end.isoformat()}"
    path = directory / output_format / f"{stem}.zip"
    path.parent.mkdir()
    written = 0
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open(f"{stem}.{output_format}", "w", force_zip64=True) as member,
    ):
        for chunk in render_export(SOURCE, WINDOW, output_format, config):
            member.write(chunk)
            written += len(chunk)
    return Export(path, output_format, rows_per_day, written)


def _rows_per_day_for(output_format: OutputFormat, target_bytes: int) -> int:
    """Rows per day that make the whole window about `target_bytes`, from the size of one sample day."""
    sample_day = ExportWindow(WINDOW.start, WINDOW.start)
    chunks = render_export(SOURCE, sample_day, output_format, SandboxConfig(rows_per_day=_SAMPLE_ROWS))
    bytes_per_row = sum(len(chunk) for chunk in chunks) / _SAMPLE_ROWS
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


def parse_baseline(zip_path: Path, out_dir: Path) -> int:
    """The obvious hand-written script: everything in memory, types inferred, one write per day."""
    with zipfile.ZipFile(zip_path) as archive:
        name = archive.namelist()[0]
        data = archive.read(name)
    frame = pl.read_csv(data) if name.endswith(".csv") else pl.read_ndjson(data)
    day_column = SCHEMAS[SOURCE].date_column
    frame = frame.with_columns(_export_date=pl.col(day_column).str.to_datetime(time_zone="UTC").dt.date())
    for (day,), rows in frame.partition_by("_export_date", as_dict=True).items():
        target = out_dir / f"export_date={day}" / "part-0.parquet"
        target.parent.mkdir(parents=True)
        rows.write_parquet(target)
    return frame.height


VARIANTS: Final[dict[str, Callable[[Path, Path], int]]] = {"ours": parse_ours, "baseline": parse_baseline}


def child_main(argv: Sequence[str]) -> None:
    """Run one variant in this (fresh) process and print its Measurement as JSON."""
    variant, zip_path, out_dir = argv
    start_rss = _status_mb("VmRSS")
    started = time.perf_counter()
    with _AnonymousPeak() as anonymous:
        rows = VARIANTS[variant](Path(zip_path), Path(out_dir))
    seconds = time.perf_counter() - started
    measured = Measurement(
        rows=rows,
        day_files=sum(1 for _ in Path(out_dir).glob("export_date=*/*.parquet")),
        seconds=seconds,
        start_rss_mb=start_rss,
        peak_rss_mb=_status_mb("VmHWM"),
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
    return Measurement(**json.loads(completed.stdout.splitlines()[-1]))


def _ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x" if baseline else "n/a"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="uncompressed export size to generate, in MB")
    parser.add_argument("--format", choices=("json", "csv", "both"), default="both", help="export format(s)")
    args = parser.parse_args(argv)
    formats: tuple[OutputFormat, ...] = ("json", "csv") if args.format == "both" else (args.format,)

    print(f"Parsing a {WINDOW.days}-day {SOURCE} export ZIP into one Parquet file per day ({WINDOW}).")
    print("Each variant runs in a fresh process; peak RSS is its VmHWM. MB = 10^6 bytes.\n")
    table: list[list[object]] = []
    ratios: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hatch-bench-parse-") as scratch:
        for output_format in formats:
            export = write_export(Path(scratch), output_format, int(args.mb * _MB))
            input_mb = export.uncompressed_bytes / _MB
            zip_mb = export.path.stat().st_size / _MB
            results = {name: measure(name, export, Path(scratch) / f"{output_format}-{name}") for name in VARIANTS}
            for name, result in results.items():
                table.append(
                    [
                        f"{output_format} {name}",
                        f"{input_mb:.1f}",
                        f"{zip_mb:.1f}",
                        result.rows,
                        result.day_files,
                        f"{result.start_rss_mb:.0f}",
                        f"{result.peak_rss_mb:.0f}",
                        f"{result.peak_anonymous_mb:.0f}",
                        f"{result.seconds:.1f}",
                    ]
                )
            ours, baseline = results["ours"], results["baseline"]
            ratios.append(
                f"{output_format}: peak RSS {_ratio(ours.peak_rss_mb, baseline.peak_rss_mb)}, "
                f"peak anonymous {_ratio(ours.peak_anonymous_mb, baseline.peak_anonymous_mb)}, "
                f"seconds {_ratio(ours.seconds, baseline.seconds)}; peak RSS per MB of input: "
                f"ours {ours.peak_rss_mb / input_mb:.2f}, baseline {baseline.peak_rss_mb / input_mb:.2f}"
            )
    print(format_table(_HEADER, table))
    print("\nRatios ours/baseline (below 1 means ours needs less):")
    for line in ratios:
        print(f"  {line}")


if __name__ == "__main__":
    main()
