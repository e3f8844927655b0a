"""`dagster dev` on this machine, for the demo, the README's screenshot and the end-to-end tests.

`dagster dev` runs the webserver and the daemon as two processes on one instance (DAGSTER_HOME), both talking to
one code server that loads the project's definitions (at the emulators the environment names); the daemon launches
the runs. `running_dagster` starts it in a process group of its own and returns once the webserver serves GraphQL,
the code location has loaded and every daemon the instance needs has reported a heartbeat; it stops every process
`dagster dev` started (webserver, daemon, code server, run workers and their step processes) when the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from hatch_pipeline.local.processes import ServiceStartError, free_port, running_service, venv_executable

DEFINITIONS_MODULE: Final = "hatch_pipeline.definitions"
"""The module `dagster dev -m` loads; it also names the code location."""
REPOSITORY: Final = "__repository__"
"""The repository name Dagster gives the one `Definitions` object of a module."""
STARTUP_TIMEOUT_SECONDS: Final = 300.0
"""Measured: 40 s from launch to a loaded code location on a 2-core machine under load, about 15 s when idle."""
_POLL_SECONDS: Final = 0.5
_REQUEST_TIMEOUT_SECONDS: Final = 60.0

_WORKSPACE_QUERY: Final = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""


class DagsterGraphQLError(RuntimeError):
    """The webserver answered a GraphQL request with errors; the message carries them."""


@dataclass(frozen=True)
class DagsterWebserver:
    """A running Dagster webserver, and the selectors of the code location it serves."""

    url: str
    location: str = DEFINITIONS_MODULE
    repository: str = REPOSITORY

    def graphql(self, document: str, variables: Mapping[str, object] | None = None) -> dict[str, Any]:
        """POST one GraphQL document, as the UI does; the `data` of the answer, or DagsterGraphQLError."""
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": document, "variables": dict(variables or {})},
            timeout=_REQUEST_TIMEOUT_SECONDS,
        )
        if response.status_code != httpx.codes.INTERNAL_SERVER_ERROR:  # a resolver's error: its body says which
            response.raise_for_status()
        payload: dict[str, Any] = response.json()
        if payload.get("errors"):
            raise DagsterGraphQLError(f"GraphQL errors from {self.url}: {payload['errors']}")
        data: dict[str, Any] = payload["data"]
        return data

    def is_ready(self) -> bool:
        """The code location has loaded and every required daemon is healthy; ServiceStartError if the location
        failed to load (no wait helps then: the message says why, e.g. a HATCH_* setting)."""
        try:
            data = self.graphql(_WORKSPACE_QUERY)
        except (httpx.TransportError, httpx.HTTPStatusError):
            return False  # not serving yet
        workspace = data["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise ServiceStartError(f"the Dagster workspace failed to load: {workspace.get('message')}")
        entries = workspace["locationEntries"]
        for entry in entries:
            if entry["locationOrLoadError"] and entry["locationOrLoadError"]["__typename"] == "PythonError":
                message = entry["locationOrLoadError"]["message"]
                raise ServiceStartError(f"code location {entry['name']} failed to load: {message}")
        loaded = any(entry["name"] == self.location and entry["loadStatus"] == "LOADED" for entry in entries)
        daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        return loaded and all(daemon["healthy"] for daemon in daemons if daemon["required"])


def dagster_dev_command(host: str, port: int) -> list[str]:
    """`dagster dev` serving the project's definitions on host:port."""
    return [str(venv_executable("dagster")), "dev", "-m", DEFINITIONS_MODULE, "-h", host, "-p", str(port)]


@contextmanager
def running_dagster(
    env: Mapping[str, str], dagster_home: Path, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[DagsterWebserver]:
    """Run `dagster dev` with `env` (which names DAGSTER_HOME) until the block ends; yield its webserver once
    the code location has loaded and the daemon runs. Port 0 picks a free port."""
    port = port or free_port(host)
    webserver = DagsterWebserver(f"http://{host}:{port}")
    with running_service(
        "dagster dev",
        dagster_dev_command(host, port),
        ready=webserver.is_ready,
        env=env,
        # dagster dev reads dagster.yaml from DAGSTER_HOME, and warns when the working folder holds another one.
        cwd=dagster_home,
        timeout_seconds=STARTUP_TIMEOUT_SECONDS,
        poll_seconds=_POLL_SECONDS,
    ):
        yield webserver
