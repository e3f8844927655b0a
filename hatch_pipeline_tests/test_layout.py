"""The production shell and core never load the local stand-ins (sandbox, emulators, demo): a deployment's
code server imports `hatch_pipeline.definitions` and nothing of `hatch_pipeline.local`."""

from __future__ import annotations

import subprocess
import sys

LOADED_LOCAL_MODULES = """
import sys
import hatch_pipeline.definitions
print(sorted(name for name in sys.modules if name.startswith("hatch_pipeline.local")))
"""


def test_production_definitions_load_nothing_of_the_local_stand_ins() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED_LOCAL_MODULES], capture_output=True, text=True, env=env, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_the_local_definitions_are_the_production_ones_with_emulator_resources() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    script = (
        "from hatch_pipeline import definitions as prod\n"
        "from hatch_pipeline.local import definitions as local\n"
        "keys = lambda d: sorted(k.to_user_string() for k in d.resolve_all_asset_keys())\n"
        "print(keys(prod.defs) == keys(local.defs), type(local.defs.resources['hatch_bigquery']).__name__)\n"
    )
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert shown.stdout.split() == ["True", "EmulatorBigQueryResource"]
