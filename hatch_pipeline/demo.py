"""`make demo`: the whole pipeline on this machine, with no credentials and no internet.

Starts the sandbox of the vendor API on loopback, points the HATCH_* settings at it, and serves the Dagster UI
with the project's definitions. The Dagster instance lives in `.hatch_demo/dagster_home`, so runs survive a
restart of the demo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from hatch_pipeline.sandbox.data import DEFAULT_API_KEY, SandboxConfig
from hatch_pipeline.sandbox.server import SandboxServer

DEMO_EXPORT_INTERVAL_SECONDS: Final = 2.0
"""The sandbox and the ledger use a short interval so the demo does not wait five minutes between exports."""

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent


def run_demo(*, ui_port: int, days: int, serve_ui: bool) -> int:
    home = Path.cwd() / ".hatch_demo"
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    config = SandboxConfig(min_export_interval_seconds=DEMO_EXPORT_INTERVAL_SECONDS)
    with SandboxServer(config) as sandbox:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(dagster_home),
            "HATCH_API_KEY": DEFAULT_API_KEY,
            "HATCH_API_BASE_URL": sandbox.base_url,
            "HATCH_MIN_EXPORT_INTERVAL_SECONDS": str(DEMO_EXPORT_INTERVAL_SECONDS),
            "HATCH_LOCAL_DIR": str(home / "local"),
        }
        print(f"Sandbox of the Hatch Bulk Export API: {sandbox.base_url}/export-data (key {DEFAULT_API_KEY!r})")
        if not serve_ui:
            return 0
        print(f"Dagster UI: http://127.0.0.1:{ui_port} (Ctrl-C stops the demo)", flush=True)
        dagster = Path(sys.executable).with_name("dagster")
        command = [str(dagster), "dev", "-m", "hatch_pipeline.definitions", "-h", "127.0.0.1", "-p", str(ui_port)]
        try:
            return subprocess.call(command, env=env, cwd=PROJECT_ROOT)
        except KeyboardInterrupt:
            return 0
