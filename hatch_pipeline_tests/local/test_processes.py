"""Local servers start, report why when they do not, and stop together with every process they started. The
services here are stand-ins (a shell, Python's http.server): no real server can be made to fail on demand."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from hatch_pipeline.local.processes import (
    ServiceStartError,
    answers_200,
    free_port,
    running_service,
    venv_executable,
)


def is_running(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie waiting to be reaped has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stopping_a_service_stops_the_processes_it_started(tmp_path: Path) -> None:
    port = free_port()
    child_pid = tmp_path / "child.pid"
    # A parent that leaves a child behind, as `dagster dev` leaves its webserver, daemon and run workers.
    script = f"sleep 300 & echo $! > {child_pid}; exec {sys.executable} -m http.server {port} --bind 127.0.0.1"
    with running_service("parent", ["sh", "-c", script], ready=answers_200(f"http://127.0.0.1:{port}/")):
        child = int(child_pid.read_text())
        assert is_running(child)

    deadline = time.monotonic() + 5.0
    while is_running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(child)


def test_a_service_that_dies_at_startup_is_reported_with_its_output() -> None:
    command = [sys.executable, "-c", "import sys; print('spatial extension missing'); sys.exit(3)"]
    with (
        pytest.raises(ServiceStartError, match=r"(?s)stand-in exited with code 3.*spatial extension missing"),
        running_service("stand-in", command, ready=answers_200("http://127.0.0.1:9/never")),
    ):
        pytest.fail("the process should not have been reported ready")


def test_a_readiness_check_that_gives_up_fails_at_once_with_the_output() -> None:
    def never() -> bool:
        raise ServiceStartError("the code location failed to load")

    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    with (
        pytest.raises(ServiceStartError, match=r"(?s)failed to load.*stand-in's output ends with"),
        running_service("stand-in", command, ready=never),
    ):
        pytest.fail("the process should not have been reported ready")


def test_a_missing_executable_says_how_to_install_it() -> None:
    with pytest.raises(ServiceStartError, match="uv sync"):
        venv_executable("no-such-emulator")
