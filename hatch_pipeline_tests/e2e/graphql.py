"""What a user does and reads in the Dagster UI, as the GraphQL calls the UI itself sends to the webserver.

dagster-graphql's `DagsterGraphQLClient` covers job runs, run status and location reloads, but not backfills,
asset checks or instigator ticks, so these post the UI's documents with `DagsterWebserver.graphql`. Each helper
returns plain dataclasses; `wait_for` polls any of them until a condition holds, e.g. a sensor's first tick:
`wait_for("a tick", lambda: instigator(webserver, NAME), lambda sensor: bool(sensor.ticks))`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import dagster as dg

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.local.dagster_dev import DagsterWebserver

T = TypeVar("T")

WAIT_TIMEOUT_SECONDS: Final = 600.0
"""Generous: the daemon looks at backfills every 30 s, and a 2-core machine shared with other work is slow."""
_POLL_SECONDS: Final = 1.0
BACKFILL_DONE: Final = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})

_RUN_FIELDS: Final = "runId status tags { key value } assetSelection { path }"


@dataclass(frozen=True)
class Run:
    run_id: str
    status: str
    tags: Mapping[str, str]
    assets: frozenset[dg.AssetKey]


@dataclass(frozen=True)
class Backfill:
    backfill_id: str
    status: str
    """REQUESTED while the daemon works on it; then COMPLETED_SUCCESS, COMPLETED_FAILED, FAILED or CANCELED."""
    error: str | None


@dataclass(frozen=True)
class CheckExecution:
    asset: dg.AssetKey
    check: str
    run_id: str
    status: str
    """SUCCEEDED, FAILED, EXECUTION_FAILED, SKIPPED or IN_PROGRESS."""
    partition: str | None


@dataclass(frozen=True)
class Instigator:
    """A schedule or a sensor as the instance knows it: whether it runs, its next and its latest ticks."""

    name: str
    status: str
    next_tick_at: float | None
    ticks: Sequence[Mapping[str, Any]]
    """Newest first: status, timestamp, runIds, skipReason, error {message}."""


def wait_for(what: str, probe: Callable[[], T], done: Callable[[T], bool], timeout: float = WAIT_TIMEOUT_SECONDS) -> T:
    """Call `probe` every second until `done` holds for its answer; that answer, or TimeoutError naming `what`
    and the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if done(answer):
            return answer
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s; last seen: {answer}")
        time.sleep(_POLL_SECONDS)


def group_assets(webserver: DagsterWebserver, group: str) -> dict[dg.AssetKey, list[str]]:
    """The assets of a group, each with the names of its asset checks."""
    data = webserver.graphql(
        """query($group: AssetGroupSelector) {
          assetNodes(group: $group) {
            assetKey { path }
            assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
          }
        }""",
        {"group": {**_repository(webserver), "groupName": group}},
    )
    return {
        dg.AssetKey(node["assetKey"]["path"]): [check["name"] for check in node["assetChecksOrError"]["checks"]]
        for node in data["assetNodes"]
    }


def launch_backfill(
    webserver: DagsterWebserver,
    assets: Sequence[dg.AssetKey],
    window: ExportWindow,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Backfill the window's partitions of `assets`, as "Materialize… → Launch backfill" in the UI does; its id."""
    data = webserver.graphql(
        """mutation($params: LaunchBackfillParams!) {
          launchPartitionBackfill(backfillParams: $params) {
            __typename
            ... on LaunchBackfillSuccess { backfillId }
            ... on Error { message }
          }
        }""",
        {
            "params": {
                "partitionsByAssets": [
                    {
                        "assetKey": {"path": list(asset.path)},
                        "partitions": {"range": {"start": window.start.isoformat(), "end": window.end.isoformat()}},
                    }
                    for asset in assets
                ],
                "tags": [{"key": key, "value": value} for key, value in (tags or {}).items()],
            }
        },
    )
    result = data["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise AssertionError(f"the backfill was refused: {result}")
    backfill_id: str = result["backfillId"]
    return backfill_id


def backfill(webserver: DagsterWebserver, backfill_id: str) -> Backfill:
    data = webserver.graphql(
        """query($id: String!) {
          partitionBackfillOrError(backfillId: $id) {
            __typename
            ... on PartitionBackfill { status error { message } }
            ... on Error { message }
          }
        }""",
        {"id": backfill_id},
    )
    found = data["partitionBackfillOrError"]
    if found["__typename"] != "PartitionBackfill":
        raise AssertionError(f"no backfill {backfill_id}: {found}")
    error = found["error"]["message"] if found["error"] else None
    return Backfill(backfill_id, found["status"], error)


def wait_for_backfill(webserver: DagsterWebserver, backfill_id: str) -> Backfill:
    """The backfill once the daemon has marked it done (completed, failed or canceled)."""
    return wait_for(
        f"backfill {backfill_id} finishing",
        lambda: backfill(webserver, backfill_id),
        lambda found: found.status in BACKFILL_DONE,
    )


def runs(webserver: DagsterWebserver, tags: Mapping[str, str] | None = None) -> list[Run]:
    """The instance's runs carrying all of `tags` (every run without), newest first."""
    data = webserver.graphql(
        f"""query($filter: RunsFilter) {{
          runsOrError(filter: $filter) {{
            __typename
            ... on Runs {{ results {{ {_RUN_FIELDS} }} }}
            ... on Error {{ message }}
          }}
        }}""",
        {"filter": {"tags": [{"key": key, "value": value} for key, value in (tags or {}).items()]}},
    )
    return [_run(run) for run in data["runsOrError"]["results"]]


def check_executions(
    webserver: DagsterWebserver, asset: dg.AssetKey, check: str, limit: int = 100
) -> list[CheckExecution]:
    """The newest executions of one asset check, of every partition."""
    data = webserver.graphql(
        """query($asset: AssetKeyInput!, $check: String!, $limit: Int!) {
          assetCheckExecutions(assetKey: $asset, checkName: $check, limit: $limit) {
            runId status partition
          }
        }""",
        {"asset": {"path": list(asset.path)}, "check": check, "limit": limit},
    )
    return [
        CheckExecution(asset, check, execution["runId"], execution["status"], execution["partition"])
        for execution in data["assetCheckExecutions"]
    ]


def instigator(webserver: DagsterWebserver, name: str, ticks: int = 10) -> Instigator:
    """A schedule or sensor of the code location, by name, with its newest `ticks` ticks."""
    data = webserver.graphql(
        """query($selector: InstigationSelector!, $ticks: Int) {
          instigationStateOrError(instigationSelector: $selector) {
            __typename
            ... on InstigationState {
              name status
              nextTick { timestamp }
              ticks(limit: $ticks) { status timestamp runIds skipReason error { message } }
            }
            ... on Error { message }
          }
        }""",
        {"selector": {**_repository(webserver), "name": name}, "ticks": ticks},
    )
    state = data["instigationStateOrError"]
    if state["__typename"] != "InstigationState":
        raise AssertionError(f"no schedule or sensor {name}: {state}")
    next_tick = state["nextTick"]["timestamp"] if state["nextTick"] else None
    return Instigator(state["name"], state["status"], next_tick, state["ticks"])


def start_sensor(webserver: DagsterWebserver, name: str) -> None:
    """Turn a sensor on, as its toggle in the UI does; the daemon evaluates it on its next loop."""
    data = webserver.graphql(
        """mutation($selector: SensorSelector!) {
          startSensor(sensorSelector: $selector) {
            __typename
            ... on Sensor { sensorState { status } }
            ... on Error { message }
          }
        }""",
        {"selector": {**_repository(webserver), "sensorName": name}},
    )
    started = data["startSensor"]
    if started["__typename"] != "Sensor" or started["sensorState"]["status"] != "RUNNING":
        raise AssertionError(f"sensor {name} did not start: {started}")


def _repository(webserver: DagsterWebserver) -> dict[str, str]:
    return {"repositoryName": webserver.repository, "repositoryLocationName": webserver.location}


def _run(found: Mapping[str, Any]) -> Run:
    return Run(
        run_id=found["runId"],
        status=found["status"],
        tags={tag["key"]: tag["value"] for tag in found["tags"]},
        assets=frozenset(dg.AssetKey(key["path"]) for key in found["assetSelection"] or []),
    )
