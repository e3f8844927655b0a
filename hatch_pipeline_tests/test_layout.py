"""The production shell and core never load the local stand-ins (sandbox, emulators, demo): a deployment's
code server imports `hatch_pipeline.definitions` and nothing of `hatch_pipeline.local`. And no module reaches into
another's private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hatch_pipeline

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


LOADED_BY_PARSING = """
import sys
import hatch_pipeline.parsing.export
print(sorted({name.split(".")[1] for name in sys.modules if name.startswith("google.")}))
"""


def test_parsing_an_export_loads_no_google_client() -> None:
    """A Parquet step (or anyone calling `parse_export`) pays no start-up for the BigQuery and Storage clients:
    importing them took about 0.7 s, more than parsing a 50 MB export."""
    loaded = subprocess.run([sys.executable, "-c", LOADED_BY_PARSING], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_no_module_uses_a_private_name_of_another() -> None:
    """A name starting with `_` belongs to its module: one that another module needs is made public, with a
    docstring that says why, so a module's public names are all that other modules lean on."""
    found = []
    for path in sorted(Path(hatch_pipeline.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("hatch_pipeline")):
                found += [f"{path}:{node.lineno} imports {alias.name}" for alias in node.names if _private(alias.name)]
                imported |= {alias.asname or alias.name for alias in node.names}
        found += [
            f"{path}:{node.lineno} uses {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in imported
            and _private(node.attr)
        ]
    assert found == []


def test_the_vendor_side_imports_only_the_contract() -> None:
    """export_api/ talks to the vendor: of the project it imports the contract and itself (README, Layout), so the
    settings, the stages and Dagster can change without it."""
    package = Path(hatch_pipeline.__file__).parent
    found = [
        f"{path.relative_to(package)}:{node.lineno} imports {node.module}"
        for path in sorted((package / "export_api").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("hatch_pipeline")
        and node.module != "hatch_pipeline.contract"
        and not (node.module or "").startswith("hatch_pipeline.export_api")
    ]
    assert found == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def test_a_code_load_prints_no_warning() -> None:
    """What a code server (and `make demo`) loads: no beta or supersession warning reaches its log. Every warning
    is shown (`-W default`), so one Dagster starts to give fails here until it is dealt with or filtered by name."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    script = "from hatch_pipeline.definitions import defs\ndefs()\n"
    loaded = subprocess.run(
        [sys.executable, "-W", "default", "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert "Warning" not in loaded.stderr, loaded.stderr
