"""The export resource: configured like a user would (EnvVar key), used inside a real Dagster run."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from google.cloud.storage import Bucket

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.defs.resources import HatchExportResource
from hatch_pipeline.export_api.client import ExportedFile
from hatch_pipeline.export_api.gcs_ledger import GcsLedgerStore
from hatch_pipeline.export_api.ledger import LocalLedgerStore, organization_key
from hatch_pipeline.local.sandbox.server import SandboxServer
from hatch_pipeline.settings import SettingsError
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp

KEY = "sk-test-7f41aa-resource-secret"
ORGANIZATION = "org-resource-tests"


@pytest.fixture
def api(sandbox: SandboxServer) -> SandboxServer:
    sandbox.config = replace(sandbox.config, api_keys={KEY: ORGANIZATION}, rows_per_day=5)
    return sandbox


def test_the_key_shows_in_no_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATCH_API_KEY", KEY)
    deferred = HatchExportResource(api_key=dg.EnvVar("HATCH_API_KEY"), ledger_url=str(tmp_path))
    resolved = HatchExportResource(api_key=KEY, ledger_url=str(tmp_path))

    for resource in (deferred, resolved):
        assert KEY not in repr(resource) and KEY not in str(resource)
    with resolved.client("UTC") as client:
        assert KEY not in repr(client)


def test_ledger_follows_the_configuration(tmp_path: Path) -> None:
    resource = HatchExportResource(
        api_key=KEY,
        ledger_url=str(tmp_path / "ledger"),
        min_export_interval_seconds=120,
        max_exports_per_day=40,
        max_slot_wait_seconds=60,
    )

    ledger = resource.ledger()

    assert ledger.organization == organization_key(KEY)
    assert (ledger.min_interval, ledger.max_per_day, ledger.max_wait) == (
        timedelta(minutes=2),
        40,
        timedelta(minutes=1),
    )
    assert isinstance(ledger.store, LocalLedgerStore) and ledger.store.folder == tmp_path / "ledger"


def test_a_gs_ledger_url_keeps_the_ledger_in_the_bucket(gcp_emulator_env: LocalGcp, gcs_bucket: Bucket) -> None:
    resource = HatchExportResource(
        api_key=KEY, ledger_url=f"gs://{gcs_bucket.name}/hatch/", min_export_interval_seconds=0
    )

    ledger = resource.ledger()
    ledger.reserve()

    assert isinstance(ledger.store, GcsLedgerStore)
    blobs = list(gcs_bucket.list_blobs())
    assert [blob.name for blob in blobs] == [f"hatch/ledger/{organization_key(KEY)}.json"]
    assert KEY.encode() not in blobs[0].download_as_bytes()
    assert len(ledger.store.read(ledger.organization).slots) == 1


def test_a_resource_builds_one_ledger_for_its_client_and_stages(gcp_emulator_env: LocalGcp, gcs_bucket: Bucket) -> None:
    """The raw step hands the ledger to its client and to the stage: one ledger, one storage client per step."""
    resource = HatchExportResource(api_key=KEY, ledger_url=f"gs://{gcs_bucket.name}/hatch/")

    assert resource.ledger() is resource.ledger()


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("base_url", "http://bulk-export-api.example.com/api/v1", "HATCH_API_BASE_URL"),
        ("max_exports_per_day", 0, "HATCH_MAX_EXPORTS_PER_DAY"),
    ],
)
def test_bad_configuration_names_the_variable_to_fix(tmp_path: Path, field: str, value: Any, variable: str) -> None:
    resource = HatchExportResource(api_key=KEY, ledger_url=str(tmp_path), **{field: value})

    with pytest.raises(SettingsError, match=variable):
        resource.ledger()


def test_an_asset_exports_through_the_resource_in_a_dagster_run(
    api: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HATCH_API_KEY", KEY)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)  # the sandbox's today is UTC's, like the client's
    window = ExportWindow(yesterday - timedelta(days=2), yesterday)
    dest = tmp_path / "exports"

    @dg.asset
    def raw_contact_history(hatch: HatchExportResource) -> dg.MaterializeResult[None]:
        with hatch.client("UTC") as client:
            outcome = client.export("contact_history", window, dest)
        assert isinstance(outcome, ExportedFile)
        return dg.MaterializeResult(metadata={"path": str(outcome.path), "sha256": outcome.sha256})

    resource = HatchExportResource(
        api_key=dg.EnvVar("HATCH_API_KEY"),
        base_url=api.base_url,
        ledger_url=str(tmp_path / "ledger"),
        min_export_interval_seconds=0.05,
    )
    result = dg.materialize([raw_contact_history], resources={"hatch": resource})

    assert result.success
    (materialization,) = result.asset_materializations_for_node("raw_contact_history")
    path = Path(str(materialization.metadata["path"].value))
    assert path.parent == dest and path.exists()
    assert not [event for event in result.all_events if KEY in str(event)]
    assert len(LocalLedgerStore(tmp_path / "ledger").read(organization_key(KEY)).slots) == 1


EMULATOR_QUERY = """
import dagster as dg
from hatch_pipeline.definitions import defs
from hatch_pipeline.defs.resources import HatchBigQueryResource

@dg.asset
def answer(hatch_bigquery: HatchBigQueryResource) -> None:
    with hatch_bigquery.get_client() as client:
        print(next(iter(client.query("SELECT 6 * 7 AS answer").result())).answer)

dg.materialize([answer], resources={"hatch_bigquery": defs().resources["hatch_bigquery"]})
"""


def test_the_production_definitions_reach_the_bigquery_emulator_without_google_credentials(
    local_gcp: LocalGcp, tmp_path: Path
) -> None:
    """As the README's configuration table says: BIGQUERY_EMULATOR_HOST points the production definitions at an
    emulator, anonymously. Without it, Google's client asks for default credentials, which this environment lacks."""
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HATCH_BQ_PROJECT": local_gcp.project}
    run = [sys.executable, "-c", EMULATOR_QUERY]

    answered = subprocess.run(
        run, env={**bare, "BIGQUERY_EMULATOR_HOST": local_gcp.bigquery_endpoint}, capture_output=True, text=True
    )
    refused = subprocess.run(run, env=bare, capture_output=True, text=True)

    assert (answered.returncode, answered.stdout.strip()) == (0, "42"), answered.stderr
    assert "DefaultCredentialsError" in refused.stderr
