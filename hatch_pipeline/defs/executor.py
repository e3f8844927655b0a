"""How a run starts its steps: Dagster's multiprocess executor, each step forked from a server that imported the
project once, instead of a fresh interpreter per step that imports Dagster, polars, pyarrow and the Google clients
again (benchmarks/run_overhead.py measures the difference: about four times faster for a 14-day range run).

The forkserver belongs to the run worker (one per run in a deployment: the run launcher starts a process or a pod
per run), so a step sees the environment its run worker started with, as under spawn. A process that launches
several runs itself (`execute_job` in a test) keeps its first forkserver, and that forkserver's environment, for
every later run.
"""

from __future__ import annotations

from typing import Final

import dagster as dg

PRELOADED_MODULES: Final = [
    "hatch_pipeline.definitions",
    "dagster._core.storage.sqlite_storage",
    "dagster_postgres",
]
"""Imported once by the forkserver: the code location's module (and through it Dagster, polars, pyarrow, httpx and
the Google clients), and the instance's storage that every step opens (SQLite locally, PostgreSQL deployed: about
a second per step otherwise). A module that does not import is skipped by the forkserver, so an installation
without dagster-postgres, or a Dagster that moved its SQLite storage, is slower, never broken. The definitions
stay lazy: each step builds them from its environment."""

STEP_EXECUTOR: Final = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": PRELOADED_MODULES}}},
    name="hatch_multiprocess_executor",
)
