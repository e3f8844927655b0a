"""The deployment artifacts a user copies agree with each other and with the instance the tests run: the Dockerfile,
deploy/dagster.yaml, the Helm values and dagster_cloud.yaml. The production-topology test
(e2e/test_deployment.py) runs deploy/dagster.yaml and the Dockerfile's install for real; these checks keep
the files it cannot run (no Kubernetes here) from drifting away from it."""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import Any

import dagster as dg
from dagster_shared.yaml_utils import safe_load_yaml

from hatch_pipeline.local.demo import PROJECT_ROOT
from hatch_pipeline.settings import Settings
from hatch_pipeline_tests.support.deployment import dockerfile_install_command

PROJECT_SECTIONS = ("run_retries", "run_monitoring")
"""Instance sections the project relies on beside its pools: retries after a lost worker, slots given back."""
REQUIRED_SETTINGS = ("HATCH_GCS_BUCKET", "HATCH_BQ_PROJECT", "HATCH_TIMEZONE", "HATCH_FIRST_PARTITION")
"""The settings a deployment must set: the first two have no default, the others must not change between loads."""


def read_yaml(name: str) -> Any:
    return safe_load_yaml((PROJECT_ROOT / name).read_text())


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def snake_keys(values: dict[str, Any]) -> dict[str, Any]:
    """The Helm chart's camelCase values as the dagster.yaml keys the chart renders them to."""
    return {snake(key): snake_keys(value) if isinstance(value, dict) else value for key, value in values.items()}


def grpc_module(args: list[str]) -> str:
    return args[args.index("-m") + 1]


def dockerfile_command() -> list[str]:
    [cmd] = re.findall(r"^CMD (\[.*\])$", (PROJECT_ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    command: list[str] = safe_load_yaml(cmd)
    return command


def test_the_production_instance_keeps_the_project_sections_of_the_local_one() -> None:
    local, deployed = read_yaml("dagster.yaml"), read_yaml("deploy/dagster.yaml")

    assert {name: deployed[name] for name in PROJECT_SECTIONS} == {name: local[name] for name in PROJECT_SECTIONS}
    assert deployed["concurrency"]["pools"] == local["concurrency"]["pools"]
    assert deployed["run_coordinator"]["class"] == "QueuedRunCoordinator"
    database = dict(deployed["storage"]["postgres"]["postgres_db"])
    assert database.pop("scheme") == "postgresql+psycopg2", "the driver dagster-postgres installs"
    assert all(set(value) == {"env"} for value in database.values()), "the database is reached through env vars"


def test_dagster_accepts_the_production_instance_apart_from_its_database() -> None:
    """Dagster's own schema checks every section but the storage (the topology test connects that one for real)."""
    settings = {name: value for name, value in read_yaml("deploy/dagster.yaml").items() if name != "storage"}

    with dg.instance_for_test(overrides=settings) as instance:
        assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_the_helm_values_render_the_same_instance_sections() -> None:
    values = read_yaml("deploy/helm/values.yaml")
    deployed = read_yaml("deploy/dagster.yaml")
    daemon = values["dagsterDaemon"]

    assert values["concurrency"]["enabled"]
    assert snake_keys(values["concurrency"]["pools"]) == deployed["concurrency"]["pools"]
    assert snake_keys(values["concurrency"]["runs"]) == deployed["concurrency"]["runs"]
    assert snake_keys(daemon["runRetries"]) == deployed["run_retries"]
    assert snake_keys(daemon["runMonitoring"]) == deployed["run_monitoring"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlScheme"] == deployed["storage"]["postgres"]["postgres_db"]["scheme"]


def test_every_artifact_serves_the_production_definitions() -> None:
    module = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    [deployment] = read_yaml("deploy/helm/values.yaml")["dagster-user-deployments"]["deployments"]
    [location] = read_yaml("dagster_cloud.yaml")["locations"]

    assert module == "hatch_pipeline.definitions"
    assert dockerfile_command()[:3] == ["dagster", "api", "grpc"]
    assert grpc_module(dockerfile_command()) == module
    assert grpc_module(deployment["dagsterApiGrpcArgs"]) == module
    assert location["code_source"]["module_name"] == module


def test_the_helm_deployment_sets_every_required_setting_and_takes_the_key_from_a_secret() -> None:
    values = read_yaml("deploy/helm/values.yaml")
    [deployment] = values["dagster-user-deployments"]["deployments"]
    env = {item["name"]: item["value"] for item in deployment["env"]}

    assert set(REQUIRED_SETTINGS) <= set(env)
    assert "HATCH_API_KEY" not in env, "the key belongs in a Kubernetes Secret, not in the values"
    assert deployment["envSecrets"] == values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"], "run pods need the settings too"
    assert Settings.from_env(env).first_partition == env["HATCH_FIRST_PARTITION"]


def test_the_image_installs_the_locked_deploy_group_without_dev_tools_as_a_user_without_privileges() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    install = dockerfile_install_command()

    assert install[:2] == ["uv", "sync"]
    assert {"--frozen", "--no-dev"} <= set(install)
    assert install[install.index("--group") + 1] == "deploy"
    [user] = re.findall(r"^USER (\S+)$", dockerfile, flags=re.MULTILINE)
    assert user not in {"root", "0"}


def test_the_deploy_group_moves_in_lockstep_with_dagster() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    pins = dict(shlex.split(item.replace("==", " "))[:2] for item in project["dependency-groups"]["deploy"])
    [gcp] = [item for item in project["project"]["dependencies"] if item.startswith("dagster-gcp==")]

    assert pins == {"dagster-postgres": gcp.split("==")[1], "dagster-k8s": gcp.split("==")[1]}
