"""`make demo` on a fresh folder: the sandbox and both emulators start, a range run lands both tables, the report
says what landed. Runs the real command in a subprocess, as a user's terminal would (without the UI); and the UI's
part of the terminal shows only warnings and errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hatch_pipeline.local.demo import serve_quietly
from hatch_pipeline.local.services import gcs_local_root


def test_the_demo_lands_both_sources_and_reports_them(tmp_path: Path) -> None:
    command = [str(Path(sys.executable).with_name("hatch-pipeline")), "demo", "--no-ui", "--days", "2"]

    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)

    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Landed" in finished.stdout and "with 2 export request(s)" in finished.stdout
    # A short progress report, not Dagster's hundreds of debug events (those go to .hatch_demo/materialize.log).
    assert "exported, stored gs://hatch-demo/" in finished.stdout
    assert len(finished.stdout.splitlines()) < 30, finished.stdout
    assert "STEP_START" in (tmp_path / ".hatch_demo" / "materialize.log").read_text()
    for source in ("contact_history", "conversation_items"):
        match = re.search(rf"hatch-demo\.hatch\.{source}: ([\d,]+) rows over 2 days", finished.stdout)
        assert match is not None, finished.stdout
        assert int(match.group(1).replace(",", "")) > 0
    assert any((gcs_local_root(tmp_path / ".hatch_demo" / "gcs") / "hatch-demo" / "hatch" / "raw").rglob("*.zip"))


DAGSTER_DEV_LINES = """
import warnings
print("2026-12-04 00:58:35 +0000 - dagster.daemon.SensorDaemon - INFO - Checking for new runs for sensor")
print("2026-12-04 00:58:36 +0000 - dagster.daemon - INFO - Instance is configured with the following daemons")
warnings.warn("The `dagster dev` command is superseded by `dg dev`", FutureWarning)
print("2026-12-04 00:58:40 +0000 - dagster - ERROR - hatch_daily - 70a5e897 - RUN_FAILURE - Execution failed.")
print("2026-12-04 00:58:36 +0000 - dagster.daemon - \x1b[34mWARNING\x1b[0m - No cursor for event type RUN_FAILURE")
print("2026-12-04 00:58:41 +0000 - dagster.daemon - \x1b[34mWARNING\x1b[0m - Sensor hatch_catch_up timed out")
"""


def test_the_ui_keeps_routine_lines_in_its_log_and_shows_only_warnings_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `make demo` serves the UI: a process writing what `dagster dev` writes (daemon ticks, a Python warning, a
    failed run, the routine warning of a fresh instance, a sensor's warning, coloured as Dagster colours them); the
    terminal gets the failed run and the sensor's warning, the log file everything."""
    log = tmp_path / "dagster.log"

    returncode = serve_quietly([sys.executable, "-c", DAGSTER_DEV_LINES], dict(os.environ), tmp_path, log)

    shown = capsys.readouterr().out.splitlines()
    assert returncode == 0
    assert ["RUN_FAILURE" in shown[0], "timed out" in shown[1], len(shown)] == [True, True, 2], shown
    assert "superseded" in log.read_text() and "Checking for new runs" in log.read_text()
