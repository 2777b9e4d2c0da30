"""deploy/helm/values.yaml, the values of Dagster's official Helm chart for energymon: valid
against the chart's own values schema (tests/deployment/helm/, from the Dagster repository: see
its README for the version), and the instance config the chart renders from them passes
Dagster's config validation with dagster-k8s installed (K8sRunLauncher). Secrets come from
Kubernetes Secrets only; the poll groups' node selectors and resources reach the K8sRunLauncher
through the run tag it reads; the run queue and link pools are dagster.yaml's."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import get_user_defined_k8s_config
from deployment_files import ROOT, load_yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from energymon_pipeline import settings

VALUES = ROOT / "deploy" / "helm" / "values.yaml"
SCHEMA = Path(__file__).parent / "helm" / "dagster-values.schema.json"
K8S_SCHEMAS = "https://kubernetesjsonschema.dev/"


def without_required(schema, in_condition: bool = False):
    """The schema as Helm applies it to a values FILE: Helm validates the chart's defaults
    merged with the file, and the defaults hold every required key, so `required` is dropped,
    except in the if/then rules (a K8sRunLauncher still needs its `k8sRunLauncher` config)."""
    if isinstance(schema, list):
        return [without_required(item, in_condition) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: without_required(value, in_condition or key == "allOf")
        for key, value in schema.items()
        if key != "required" or in_condition
    }


def k8s_refs(schema) -> list[str]:
    if isinstance(schema, dict):
        own = [schema["$ref"]] if str(schema.get("$ref", "")).startswith(K8S_SCHEMAS) else []
        return own + [ref for value in schema.values() for ref in k8s_refs(value)]
    if isinstance(schema, list):
        return [ref for item in schema for ref in k8s_refs(item)]
    return []


def validator(schema: dict):
    """Draft 7 (the chart's schema has no $schema). The Kubernetes object schemas it refers to
    (kubernetesjsonschema.dev) are not available offline: each place it points at accepts
    anything here, so Kubernetes objects (env vars, volumes, resources) are not checked inside."""
    documents: dict[str, dict] = {}
    for ref in k8s_refs(schema):
        uri, _, pointer = ref.partition("#")
        node = documents.setdefault(uri, {})
        for part in pointer.strip("/").split("/"):
            node = node.setdefault(part, {})
    registry = Registry().with_resources(
        (uri, Resource.from_contents(document, default_specification=DRAFT7))
        for uri, document in documents.items()
    )
    return jsonschema.Draft7Validator(without_required(schema), registry=registry)


def errors(values: dict) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    found = validator(schema).iter_errors(values)
    return sorted(f"{list(e.absolute_path)}: {e.message}" for e in found)


def test_the_values_validate_against_the_charts_schema():
    assert errors(load_yaml(VALUES)) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("runLauncher", "type"), "DockerRunLauncher", "is not one of"),
        (("runLauncher", "config", "k8sRunLauncher", "runK8sConfig"), {"nodeSelector": {}},
         "is not valid under any of the given schemas"),
        (("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator", "maxConcurrentRuns"),
         "six", "is not valid under any of the given schemas"),
    ],
)  # fmt: skip
def test_the_schema_catches_mistakes(path, value, expected):
    values = copy.deepcopy(load_yaml(VALUES))
    target = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert [e for e in errors(values) if e.startswith(str(list(path[:-1]))[:-1])] != []
    assert any(expected in error for error in errors(values))


def _snake(config: dict) -> dict:
    return {"".join(f"_{c.lower()}" if c.isupper() else c for c in k): v for k, v in config.items()}


def chart_instance(values: dict) -> dict:
    """dagster.yaml as the chart's instance ConfigMap renders it from these values (its
    templates, for what these values set): PostgreSQL storage with the password from the
    chart's Secret, the K8sRunLauncher, the queued coordinator, the daemon's monitoring and
    retries, telemetry, then additionalInstanceConfig."""
    postgres = values["postgresql"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    daemon = values["dagsterDaemon"]
    config = {
        "storage": {"postgres": {"postgres_db": {
            "username": postgres["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": postgres["postgresqlHost"],
            "db_name": postgres["postgresqlDatabase"],
            "port": postgres["service"]["port"],
            "params": postgres["postgresqlParams"],
            "scheme": postgres["postgresqlScheme"],
        }}},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
            "load_incluster_config": launcher["loadInclusterConfig"],
            "job_namespace": launcher.get("jobNamespace") or "energymon",
            "image_pull_policy": launcher["imagePullPolicy"],
            "service_account_name": "energymon-dagster",
            "instance_config_map": "energymon-dagster-instance",
            "postgres_password_secret": values["global"]["postgresqlSecretName"],
            "dagster_home": "/opt/dagster/dagster_home",
            "env_config_maps": ["energymon-dagster-pipeline-env",
                                *(c["name"] for c in launcher["envConfigMaps"])],
            "env_secrets": [s["name"] for s in launcher["envSecrets"]],
            "env_vars": launcher["envVars"],
            "volume_mounts": launcher["volumeMounts"],
            "volumes": launcher["volumes"],
            "resources": launcher["resources"],
        }},
        "run_coordinator": {"module": "dagster._core.run_coordinator",
                            "class": "QueuedRunCoordinator",
                            "config": daemon["runCoordinator"]["config"]["queuedRunCoordinator"]},
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "run_monitoring": _snake(daemon["runMonitoring"]),
        "run_retries": _snake(daemon["runRetries"]),
        "telemetry": values["telemetry"],
    }  # fmt: skip
    config.update(values.get("additionalInstanceConfig", {}))
    return config


def test_the_rendered_instance_config_passes_dagsters_validation(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "x")
    rendered = chart_instance(load_yaml(VALUES))
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config, _ = dagster_instance_config(str(tmp_path))
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    checked = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors
    # The run queue and the link pools are the compose stack's.
    production = load_yaml(ROOT / "dagster.yaml")
    assert config["concurrency"] == production["concurrency"]
    assert config["run_retries"] == production["run_retries"]
    assert config["run_monitoring"] == production["run_monitoring"]
    assert config["telemetry"] == {"enabled": False}


def test_secrets_come_from_kubernetes_secrets_only():
    values = load_yaml(VALUES)
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in values["postgresql"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    secret_like = [e for e in deployment["env"] if "PASSWORD" in e["name"]]
    assert {e["name"] for e in secret_like} == {"PGPASSWORD", "INFLUXDB_WRITE_USER_PASSWORD"}
    for entry in secret_like:
        assert set(entry) == {"name", "valueFrom"}
        assert set(entry["valueFrom"]["secretKeyRef"]) == {"name", "key"}
    url = next(e["value"] for e in deployment["env"] if e["name"] == "ENERGYMON_DATABASE_URL")
    assert "@" in url and ":" not in url.split("//")[1].split("@")[0], "no password in the URL"
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}


def test_each_group_is_placed_by_the_tag_the_k8s_launcher_reads():
    [deployment] = load_yaml(VALUES)["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    pipeline = settings.pipeline(env)
    assert pipeline.poll_groups == ("site-a", "site-b")
    for group, site in (("site-a", "a"), ("site-b", "b")):
        k8s = get_user_defined_k8s_config(pipeline.group_tags[group])
        assert k8s.pod_spec_config == {"node_selector": {"energymon/site": site}}
        assert k8s.container_config["resources"]["requests"] == {"cpu": "500m", "memory": "384Mi"}
    # The image's code location, as the compose stack's code server serves it.
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "energymon_pipeline.definitions"]
