"""Fixtures shared by every test package: real local servers, started per test so no state leaks between tests."""

from __future__ import annotations

import multiprocessing.forkserver
from collections.abc import Iterator

import pytest

from hatch_pipeline.local.sandbox.server import SandboxServer

pytest_plugins = ["hatch_pipeline_tests.support.gcp_fixtures", "hatch_pipeline_tests.support.pipeline_fixtures"]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A running sandbox of the vendor API on 127.0.0.1 and a free port, with its default configuration.

    Tests adjust it with `sandbox.config = dataclasses.replace(sandbox.config, ...)`.
    """
    with SandboxServer() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_forkserver() -> Iterator[None]:
    """Stop the forkserver a test's run started in this process (the project's executor starts steps from one).

    A forkserver keeps the environment of the moment it started, so the next test's steps would read the last test's
    HATCH_* variables (its sandbox, its bucket). A deployment starts one per run worker, i.e. per run, which is what
    this restores. The standard library has no public way to stop it: `_stop` is what its own tests call."""
    yield
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
