"""What a user does and reads in the Dagster UI, as the GraphQL calls the UI itself sends to the webserver.

dagster-graphql's `DagsterGraphQLClient` covers job runs, run status and location reloads, but not backfills,
asset checks or instigator ticks, so these post the UI's documents with `DagsterWebserver.graphql`. Each helper
returns plain dataclasses; `wait_for` polls any of them until a condition holds, e.g. a sensor's first tick:
`wait_for("a tick", lambda: instigator(webserver, NAME), lambda sensor: bool(sensor.ticks))`.
"""

from __future__ import annotations

import json
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
RUN_DONE: Final = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
ASSET_JOB: Final = "__ASSET_JOB"
"""The implicit job the UI launches "Materialize selected" in."""

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
    description: str | None
    metadata: Mapping[str, Any]
    """The result's JSON metadata entries, parsed (e.g. failed_days)."""


@dataclass(frozen=True)
class Materialization:
    run_id: str
    timestamp: float
    """Seconds since the epoch."""


@dataclass(frozen=True)
class RunRequest:
    tags: Mapping[str, str]
    assets: frozenset[dg.AssetKey]


@dataclass(frozen=True)
class Evaluation:
    """What a schedule or sensor would request now (the UI's "Test schedule" / "Test sensor"), launching nothing."""

    run_requests: Sequence[RunRequest]
    skip_reason: str | None
    error: str | None


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
            evaluation { description metadataEntries { label ... on JsonMetadataEntry { jsonString } } }
          }
        }""",
        {"asset": {"path": list(asset.path)}, "check": check, "limit": limit},
    )
    return [_check_execution(asset, check, execution) for execution in data["assetCheckExecutions"]]


def materializations(webserver: DagsterWebserver, asset: dg.AssetKey, partition: str) -> list[Materialization]:
    """The materializations of one partition of an asset, newest first."""
    data = webserver.graphql(
        """query($asset: AssetKeyInput!, $partitions: [String!]) {
          assetOrError(assetKey: $asset) {
            __typename
            ... on Asset { assetMaterializations(partitions: $partitions) { runId timestamp } }
          }
        }""",
        {"asset": {"path": list(asset.path)}, "partitions": [partition]},
    )
    found = data["assetOrError"]
    if found["__typename"] != "Asset":
        return []
    events = [
        Materialization(event["runId"], float(event["timestamp"]) / 1000) for event in found["assetMaterializations"]
    ]
    return sorted(events, key=lambda event: event.timestamp, reverse=True)


def launch_run(
    webserver: DagsterWebserver,
    job: str,
    assets: Sequence[dg.AssetKey] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Launch a run of `job` (of `assets` only, as "Materialize selected" does in ASSET_JOB); its id."""
    selector: dict[str, Any] = {**_repository(webserver), "pipelineName": job}
    if assets is not None:
        selector["assetSelection"] = [{"path": list(asset.path)} for asset in assets]
    data = webserver.graphql(
        """mutation($params: ExecutionParams!) {
          launchPipelineExecution(executionParams: $params) {
            __typename
            ... on LaunchRunSuccess { run { runId } }
            ... on Error { message }
            ... on RunConfigValidationInvalid { errors { message } }
          }
        }""",
        {
            "params": {
                "selector": selector,
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in (tags or {}).items()]},
            }
        },
    )
    launched = data["launchPipelineExecution"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise AssertionError(f"the run of {job} was refused: {launched}")
    run_id: str = launched["run"]["runId"]
    return run_id


def run(webserver: DagsterWebserver, run_id: str) -> Run:
    data = webserver.graphql(
        f"""query($id: ID!) {{
          runOrError(runId: $id) {{
            __typename
            ... on Run {{ {_RUN_FIELDS} }}
            ... on Error {{ message }}
          }}
        }}""",
        {"id": run_id},
    )
    found = data["runOrError"]
    if found["__typename"] != "Run":
        raise AssertionError(f"no run {run_id}: {found}")
    return _run(found)


def wait_for_run(webserver: DagsterWebserver, run_id: str) -> Run:
    """The run once it has ended (succeeded, failed or canceled)."""
    return wait_for(f"run {run_id} ending", lambda: run(webserver, run_id), lambda found: found.status in RUN_DONE)


def dry_run_schedule(webserver: DagsterWebserver, name: str, at: float) -> Evaluation:
    """Evaluate a schedule for its first tick at or after `at` (seconds since the epoch), as "Test schedule" does."""
    data = webserver.graphql(
        f"""mutation($selector: ScheduleSelector!, $at: Float) {{
          scheduleDryRun(selectorData: $selector, timestamp: $at) {{ {_DRY_RUN_FIELDS} }}
        }}""",
        {"selector": {**_repository(webserver), "scheduleName": name}, "at": at},
    )
    return _evaluation(name, data["scheduleDryRun"])


def dry_run_sensor(webserver: DagsterWebserver, name: str) -> Evaluation:
    """Evaluate a sensor now, as "Test sensor" does: what its next tick would request. The cursor must be sent,
    even as null: the mutation's resolver has no default for it (1.13.27)."""
    data = webserver.graphql(
        f"""mutation($selector: SensorSelector!, $cursor: String) {{
          sensorDryRun(selectorData: $selector, cursor: $cursor) {{ {_DRY_RUN_FIELDS} }}
        }}""",
        {"selector": {**_repository(webserver), "sensorName": name}, "cursor": None},
    )
    return _evaluation(name, data["sensorDryRun"])


_DRY_RUN_FIELDS: Final = """
    __typename
    ... on DryRunInstigationTick {
      evaluationResult {
        skipReason
        error { message }
        runRequests { tags { key value } assetSelection { path } }
      }
    }
    ... on Error { message }
"""


def _evaluation(name: str, found: Mapping[str, Any]) -> Evaluation:
    if found["__typename"] != "DryRunInstigationTick":
        raise AssertionError(f"{name} could not be evaluated: {found}")
    result = found["evaluationResult"]
    requests = [
        RunRequest(
            tags={tag["key"]: tag["value"] for tag in request["tags"]},
            assets=frozenset(dg.AssetKey(key["path"]) for key in request["assetSelection"] or []),
        )
        for request in result["runRequests"] or []
    ]
    error = result["error"]["message"] if result["error"] else None
    return Evaluation(requests, result["skipReason"], error)


def _check_execution(asset: dg.AssetKey, check: str, found: Mapping[str, Any]) -> CheckExecution:
    evaluation = found["evaluation"] or {}
    metadata = {
        entry["label"]: json.loads(entry["jsonString"])
        for entry in evaluation.get("metadataEntries") or []
        if "jsonString" in entry
    }
    return CheckExecution(
        asset, check, found["runId"], found["status"], found["partition"], evaluation.get("description"), metadata
    )


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


def run_event_types(webserver: DagsterWebserver, run_id: str) -> list[str]:
    """The kinds of a run's events in order (RunEnqueuedEvent, RunStartingEvent, RunStartEvent, ...), as the
    run's page lists them."""
    data = webserver.graphql(
        """query($id: ID!) {
          logsForRun(runId: $id, limit: 10000) {
            __typename
            ... on EventConnection { events { __typename } }
            ... on PythonError { message }
          }
        }""",
        {"id": run_id},
    )
    found = data["logsForRun"]
    if found["__typename"] != "EventConnection":
        raise AssertionError(f"no events for run {run_id}: {found}")
    return [event["__typename"] for event in found["events"]]


@dataclass(frozen=True)
class Topology:
    instance_info: str
    """The instance's configuration as Settings > Configuration shows it (storage, run coordinator, launcher)."""
    location_metadata: Mapping[str, str]
    """How the webserver reaches the code location: host and port for a gRPC server, a module for one it runs."""


def topology(webserver: DagsterWebserver) -> Topology:
    data = webserver.graphql(
        """query {
          instance { info }
          workspaceOrError {
            ... on Workspace { locationEntries { name displayMetadata { key value } } }
          }
        }"""
    )
    [entry] = [entry for entry in data["workspaceOrError"]["locationEntries"] if entry["name"] == webserver.location]
    metadata = {item["key"]: item["value"] for item in entry["displayMetadata"]}
    return Topology(data["instance"]["info"] or "", metadata)


@dataclass(frozen=True)
class Pool:
    limit: int | None
    pending_steps: int
    """Steps waiting for one of the pool's slots, as Deployment > Concurrency counts them."""


def pool(webserver: DagsterWebserver, name: str) -> Pool:
    """The pool as Deployment > Concurrency shows it: what the instance's database holds."""
    data = webserver.graphql(
        """query($pool: String!) {
          instance { concurrencyLimit(concurrencyKey: $pool) { limit pendingStepCount } }
        }""",
        {"pool": name},
    )
    found = data["instance"]["concurrencyLimit"]
    return Pool(found["limit"], found["pendingStepCount"])
