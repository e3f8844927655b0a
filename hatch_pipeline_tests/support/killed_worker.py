"""A job whose run worker is killed while one of its steps holds a pool slot, for test_instance.py.

Its own module, importing only dagster: the run worker and its step process each import it afresh, and the
project's modules would triple their start-up time.
"""

from __future__ import annotations

import os
import signal
from typing import Final

import dagster as dg

POOL: Final = "hatch_export_api"
"""The raw assets' pool (test_instance.py checks that it is `API_POOL`)."""


def worker_killed_in_pool() -> dg.JobDefinition:
    """The reconstructable target: one step in POOL that kills the run worker which claimed its slot, as the
    OOM killer or a lost machine would, and then itself."""

    @dg.op(pool=POOL)
    def kill_the_run_worker() -> None:
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    @dg.job(executor_def=dg.multiprocess_executor)
    def worker_killed() -> None:
        kill_the_run_worker()

    return worker_killed


if __name__ == "__main__":
    with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME names the test's instance
        dg.execute_job(dg.reconstructable(worker_killed_in_pool), instance)
