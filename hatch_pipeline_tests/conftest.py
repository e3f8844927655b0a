"""Fixtures shared by every test package: real local servers, started per test so no state leaks between tests."""

from __future__ import annotations

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
