"""Local servers as child processes: started in a process group of their own, ready once they answer, stopped with
every process they started.

The emulators are single processes, but `dagster dev` starts a webserver, a daemon, a code server, run workers and
their step processes: stopping only the first would leave the others running. Each service therefore gets its own
session (Ctrl-C reaches only us, and we stop it in order), and stopping signals the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import httpx

READY_TIMEOUT_SECONDS = 60.0
"""How long a server may take to answer its first request (bqemulator needs about 2 s on 2 cores)."""

_POLL_INTERVAL_SECONDS = 0.05
_STOP_TIMEOUT_SECONDS = 10.0
_OUTPUT_TAIL_BYTES = 4000


class ServiceStartError(RuntimeError):
    """A local server could not be started or did not answer; the message carries the tail of its output."""


Readiness = Callable[[], bool]
"""Whether a started server is ready; it may raise ServiceStartError when it can tell that it never will be."""


def answers_200(url: str) -> Readiness:
    """Ready once a GET of `url` answers 200."""

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False  # not listening yet

    return ready


@contextmanager
def running_service(
    name: str,
    command: list[str],
    *,
    ready: Readiness,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_seconds: float = READY_TIMEOUT_SECONDS,
    poll_seconds: float = _POLL_INTERVAL_SECONDS,
) -> Iterator[None]:
    """Run `command` until the block ends, once `ready()` holds (asked every `poll_seconds`); always stop it and
    its children afterwards."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: see the module's docstring
        )
        try:
            _wait_until_ready(name, process, ready, output, timeout_seconds, poll_seconds)
            yield
        finally:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group (it leads one: `start_new_session`), SIGKILL to whatever is left of the group
    once the leader has exited or after a grace period: children that outlive their parent are stopped too."""
    _signal_group(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=_STOP_TIMEOUT_SECONDS)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(group: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # every process of the group has exited
        os.killpg(group, signum)


def venv_executable(name: str) -> Path:
    """A console script of the running interpreter's environment (not whatever PATH finds first)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise ServiceStartError(
            f"{name} is not installed next to {sys.executable}; it is a development dependency: run `uv sync`"
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now: the OS's pick for port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def require_free(host: str, port: int) -> None:
    """Refuse a taken port up front: a readiness poll would be answered by whatever already holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServiceStartError(
                f"port {port} on {host} is not free ({error.strerror}); stop what listens there or pass port=0"
            ) from None


def _tail(output: IO[bytes]) -> str:
    output.flush()
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - _OUTPUT_TAIL_BYTES))
    return output.read().decode("utf-8", errors="replace").strip() or "(no output)"


def _wait_until_ready(
    name: str,
    process: subprocess.Popen[bytes],
    ready: Readiness,
    output: IO[bytes],
    timeout_seconds: float,
    poll_seconds: float,
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while True:
        exit_code = process.poll()
        if exit_code is not None:
            raise ServiceStartError(
                f"{name} exited with code {exit_code} before it was ready; its output ends with:\n{_tail(output)}"
            )
        try:
            if ready():
                return
        except ServiceStartError as error:
            raise ServiceStartError(f"{error}\n{name}'s output ends with:\n{_tail(output)}") from None
        if time.monotonic() > deadline:
            raise ServiceStartError(
                f"{name} was not ready within {timeout_seconds:.0f} s; its output ends with:\n{_tail(output)}"
            )
        time.sleep(poll_seconds)
