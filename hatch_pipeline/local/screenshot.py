"""`make screenshot`: the README's pictures, taken from the running demo: the asset graph, and the page of
`hatch/bigquery/contact_history` with its Columns and Row count.

Starts the demo's stand-ins in a temporary folder, lands the last few days with the Dagster CLI, serves the UI
with `dagster dev`, and photographs both pages with headless Chromium (Debian's `chromium` package). On a
fresh instance the UI first shows a "Join the Dagster community" dialog; the `setNuxSeen` mutation (what its
"Skip" button sends) marks it seen on the instance, so the picture shows the graph.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from hatch_pipeline.local.dagster_dev import running_dagster
from hatch_pipeline.local.demo import demo_services, materialize_command, recent_days, run_reporting_progress

WINDOW_SIZE: Final = "1600,1000"
RENDER_BUDGET_MILLISECONDS: Final = 20_000
"""Virtual time Chromium gives the page to load its data and lay out the graph before the picture is taken."""
_OUTPUT_TAIL_CHARS: Final = 3000


CHROMIUM_MISSING: Final = (
    "error: headless Chromium is needed for the screenshot and was not found on PATH; install Debian's package "
    "with `apt-get update && apt-get install -y chromium` (as root), or run `make screenshot`, which does"
)


def chromium_executable() -> str | None:
    """Debian's chromium, or the chromium-browser of other distributions, from PATH."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


ASSET_PAGE: Final = "/assets/hatch/bigquery/contact_history"
"""The asset page the README shows: the catalog's Columns (with descriptions) and Row count of a table."""


def take_screenshot(output: Path, *, days: int, asset_output: Path | None = None) -> int:
    """Write the asset graph of the demo, after landing `days` days, to `output`, and the BigQuery asset's page to
    `asset_output` (PNGs); 0 on success."""
    browser = chromium_executable()
    if browser is None:
        print(CHROMIUM_MISSING, file=sys.stderr)
        return 2
    first, last = recent_days(days)
    with (
        tempfile.TemporaryDirectory(prefix="hatch-screenshot-") as folder,
        demo_services(Path(folder), first_partition=first) as demo,
    ):
        print(f"Landing {first}..{last} in the demo's stand-ins ...", flush=True)
        returncode = run_reporting_progress(
            materialize_command(first, last), demo.env, demo.dagster_home, demo.home / "materialize.log"
        )
        if returncode != 0:
            print("The run failed; its last lines are above.", file=sys.stderr)
            return returncode
        print("Serving the Dagster UI and taking the pictures ...", flush=True)
        with running_dagster(demo.env, demo.dagster_home) as webserver:
            webserver.graphql("mutation { setNuxSeen }")
            pictures = {output: "/asset-groups", **({asset_output: ASSET_PAGE} if asset_output else {})}
            for path, page in pictures.items():
                shot = photograph(browser, f"{webserver.url}{page}", path, Path(folder) / "chromium")
                if shot.returncode != 0 or not path.is_file():
                    print(
                        f"Chromium failed; its output ends with:\n{shot.stderr[-_OUTPUT_TAIL_CHARS:]}", file=sys.stderr
                    )
                    return shot.returncode or 1
                print(f"Wrote {path}", flush=True)
    return 0


def photograph(browser: str, url: str, output: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # Chromium refuses to run as root with its sandbox on
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW_SIZE}",
            f"--virtual-time-budget={RENDER_BUDGET_MILLISECONDS}",
            f"--screenshot={output.resolve()}",
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
