"""A deployment in the process layout of Kubernetes, on this machine: what a user copies, run for real.

- PostgreSQL: a cluster of its own in a temporary folder (`postgres_server`), run as an unprivileged user when the
  tests run as root (PostgreSQL refuses root).
- The code server: `dagster api grpc -m hatch_pipeline.definitions` from an environment installed the way the
  Dockerfile installs the image (its `uv sync` line, read from the Dockerfile: no dev group, so no emulators or
  test tools), cached by the hash of uv.lock.
- `dagster-webserver` and `dagster-daemon run` as processes of their own, with a workspace that names the gRPC
  server, on deploy/dagster.yaml: run storage in PostgreSQL, the run queue, pools, run retries and monitoring.
  Runs are launched by the daemon through the code server, each in a process of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dagster_shared.yaml_utils import safe_load_yaml

from hatch_pipeline.local.dagster_dev import DEFINITIONS_MODULE, STARTUP_TIMEOUT_SECONDS, DagsterWebserver
from hatch_pipeline.local.demo import PROJECT_ROOT
from hatch_pipeline.local.processes import ServiceStartError, free_port, running_service

DEPLOY_INSTANCE: Final = PROJECT_ROOT / "deploy" / "dagster.yaml"
TEST_INTERVALS: Final[dict[tuple[str, ...], int]] = {
    ("run_coordinator", "config", "dequeue_interval_seconds"): 1,
    ("run_monitoring", "poll_interval_seconds"): 2,
    ("run_monitoring", "free_slots_after_run_end_seconds"): 2,
}
"""The only values of deploy/dagster.yaml the tests change: how often the daemon looks (5, 30 and 60 s deployed),
which decides how long a test waits, not what happens."""
BACKFILL_PAUSE_SECONDS: Final = 2
"""The backfill daemon's pause between iterations in the tests (30 s in Dagster, a module constant, not a setting:
see `daemon_command`)."""
DOCKERFILE: Final = PROJECT_ROOT / "Dockerfile"
POSTGRES_USER: Final = "dagster"
POSTGRES_DB: Final = "postgres"
"""The database initdb creates: the instance's tables go there."""
UNPRIVILEGED_USER: Final = "nobody"
HOST: Final = "127.0.0.1"


def dockerfile_install_command() -> list[str]:
    """The Dockerfile's last `uv sync` (the one that installs the project itself), as arguments."""
    *_, install = re.findall(r"^RUN (uv sync .*)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    return shlex.split(install)


def dockerfile_uv_settings() -> dict[str, str]:
    """The UV_* variables the Dockerfile's ENV lines set for that install (bytecode compiled at install, ...)."""
    lines = re.findall(r"^ENV (.*)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    pairs = (word.split("=", 1) for line in lines for word in shlex.split(line) if "=" in word)
    return {name: value for name, value in pairs if name.startswith("UV_")}


def postgres_bin() -> Path:
    """The newest PostgreSQL server installed from Debian's packages (`make test` installs it where missing)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: int(path.parts[-3]))
    if not found:
        raise ServiceStartError("PostgreSQL is not installed: `apt-get install postgresql` (make test does it)")
    return found[-1].parent


@dataclass(frozen=True)
class Postgres:
    port: int

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": HOST,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": POSTGRES_USER,
            "DAGSTER_PG_PASSWORD": "trust-auth-ignores-it",
            "DAGSTER_PG_DB": POSTGRES_DB,
        }


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own on a free port, removed when the block ends."""
    binaries = postgres_bin()
    as_user = ["runuser", "-u", UNPRIVILEGED_USER, "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="hatch-postgres-"))  # under /tmp: reachable by the unprivileged user
    try:
        if as_user:
            shutil.chown(data, UNPRIVILEGED_USER)
        subprocess.run(
            [*as_user, str(binaries / "initdb"), "-D", str(data / "cluster"), "-U", POSTGRES_USER, "-A", "trust"],
            check=True,
            capture_output=True,
        )
        port = free_port(HOST)
        server = [str(binaries / "postgres"), "-D", str(data / "cluster"), "-p", str(port)]
        settings = ["-c", f"listen_addresses={HOST}", "-c", "unix_socket_directories=", "-c", "fsync=off"]

        def ready() -> bool:
            probe = [str(binaries / "pg_isready"), "-h", HOST, "-p", str(port), "-U", POSTGRES_USER]
            return subprocess.run(probe, capture_output=True, check=False).returncode == 0

        with running_service("PostgreSQL", [*as_user, *server, *settings], ready=ready):
            yield Postgres(port)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def uv_executable() -> str:
    """uv as `make install` provides it: on PATH, or bootstrapped into .tools/."""
    found = shutil.which("uv") or str(PROJECT_ROOT / ".tools" / "bin" / "uv")
    if not Path(found).is_file():
        raise ServiceStartError("uv is not installed: run `make install`")
    return found


def deployed_environment() -> Path:
    """A virtual environment installed as the Dockerfile installs the image (its uv settings, its last `uv sync`),
    reused while uv.lock and the Dockerfile are unchanged."""
    inputs = (PROJECT_ROOT / "uv.lock").read_bytes() + DOCKERFILE.read_bytes() + str(PROJECT_ROOT).encode()
    digest = hashlib.sha256(inputs).hexdigest()[:16]  # per checkout: the project is installed editable
    venv = Path.home() / ".cache" / "hatch-pipeline" / f"deploy-venv-{digest}"
    install = dockerfile_install_command()
    if install[0] == "uv":
        install[0] = uv_executable()
    env = {**os.environ, **dockerfile_uv_settings(), "UV_PROJECT_ENVIRONMENT": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    built = subprocess.run(install, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise ServiceStartError(f"installing the image's environment failed: {built.stderr[-3000:]}")
    return venv


def answers_tcp(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((HOST, port)) == 0


def use_production_instance(dagster_home: Path) -> None:
    """deploy/dagster.yaml, with TEST_INTERVALS, as the instance of `dagster_home`: every Dagster process with that
    DAGSTER_HOME (and the DAGSTER_PG_* variables) shares the instance in PostgreSQL."""
    config: dict[str, Any] = safe_load_yaml(DEPLOY_INSTANCE.read_text())
    for (*path, name), seconds in TEST_INTERVALS.items():
        section = config
        for key in path:
            section = section.setdefault(key, {})
        section[name] = seconds
    (dagster_home / "dagster.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML


def daemon_command(venv: Path, workspace: Path) -> list[str]:
    """`dagster-daemon run` from `venv`, its backfill loop pausing BACKFILL_PAUSE_SECONDS instead of 30 s.

    Dagster reads the pause from `dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS` at each iteration and
    offers no setting for it; every test that launches a backfill would otherwise wait up to a minute for two
    iterations (one submits the run, one marks the backfill done). The other daemons keep their own intervals."""
    start = (
        "import sys; import dagster._daemon.controller as controller; "
        f"controller.DEFAULT_DAEMON_INTERVAL_SECONDS = {BACKFILL_PAUSE_SECONDS}; "
        "from dagster._daemon.cli import main; sys.argv[0] = 'dagster-daemon'; main()"
    )
    return [str(venv / "bin" / "python"), "-c", start, "run", "-w", str(workspace)]


@contextmanager
def running_deployment(env: Mapping[str, str], dagster_home: Path, venv: Path) -> Iterator[DagsterWebserver]:
    """The code server, the daemon and the webserver as three processes on the production instance in
    `dagster_home` (`env` names it, and PostgreSQL); yields the webserver once the location has loaded and the
    daemons run."""
    use_production_instance(dagster_home)
    grpc_port, web_port = free_port(HOST), free_port(HOST)
    workspace = dagster_home / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server: {{host: {HOST}, port: {grpc_port}, location_name: {DEFINITIONS_MODULE}}}\n"
    )
    dagster = str(venv / "bin" / "dagster")
    webserver = DagsterWebserver(f"http://{HOST}:{web_port}")
    code_server = [dagster, "api", "grpc", "-m", DEFINITIONS_MODULE, "-h", HOST, "-p", str(grpc_port)]
    processes = {
        "the code server": (code_server, lambda: answers_tcp(grpc_port)),
        "the daemon": (daemon_command(venv, workspace), lambda: True),
        "the webserver": (
            [str(venv / "bin" / "dagster-webserver"), "-w", str(workspace), "-h", HOST, "-p", str(web_port)],
            webserver.is_ready,
        ),
    }
    with ExitStack() as stack:
        for name, (command, ready) in processes.items():
            stack.enter_context(
                running_service(
                    name, command, ready=ready, env=env, cwd=dagster_home, timeout_seconds=STARTUP_TIMEOUT_SECONDS
                )
            )
        yield webserver


def _processes() -> dict[int, tuple[int, list[str]]]:
    """Every process on the machine: its parent and its arguments (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # it ended meanwhile
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        found[int(entry.name)] = (parent, argv)
    return found


def _serves_grpc_on(argv: list[str], port: str) -> bool:
    """`dagster api grpc ... -p PORT`, however the console script was started."""
    return {"api", "grpc"} <= set(argv) and "-p" in argv and argv[argv.index("-p") + 1 :][:1] == [port]


def kill_run_workers(grpc_port: str) -> list[int]:
    """SIGKILL to every run worker of the code server listening on `grpc_port`, and to their step processes, as
    when a run's pod dies; the processes killed. A worker is a process the code server spawned for a run (the
    multiprocessing resource tracker it also starts is left alone)."""
    processes = _processes()
    servers = [pid for pid, (_, argv) in processes.items() if _serves_grpc_on(argv, grpc_port)]
    if len(servers) != 1:
        raise AssertionError(f"not one code server on port {grpc_port}: {servers}")
    [server] = servers
    workers = [
        pid
        for pid, (parent, argv) in processes.items()
        if parent == server and not any("resource_tracker" in arg for arg in argv)
    ]
    doomed = list(workers)
    for pid in doomed:  # grows while it is walked: the steps of each worker, then theirs
        doomed += [child for child, (parent, _) in processes.items() if parent == pid]
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return doomed
