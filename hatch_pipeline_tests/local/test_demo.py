"""`make demo` on a fresh folder: the sandbox and both emulators start, a range run lands both tables, the report
says what landed. Runs the real command in a subprocess, as a user's terminal would (without the UI)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
