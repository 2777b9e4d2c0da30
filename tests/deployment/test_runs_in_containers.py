"""The compose variant in which each run gets its own container: docker-compose.runs-in-containers.yml
(an override of docker-compose.yml) validates against the Compose Specification, alone and
merged; its instance config, dagster.docker-launcher.yaml, passes Dagster's own config
validation with dagster-docker installed and builds a DockerRunLauncher; it is dagster.yaml but
for the launcher; the runs get the project image, the stack's network, the spool volume and the
code server's environment by name only (the daemon has every value; no secret in the file)."""

from __future__ import annotations

import re
import shutil
import tomllib

import dagster_docker
import jsonschema
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes import ConfigurableClassData
from deployment_files import ROOT, interpolate, load_compose, load_yaml, read_env_file
from test_compose_file import compose_schema

OVERRIDE = ROOT / "docker-compose.runs-in-containers.yml"
INSTANCE = ROOT / "dagster.docker-launcher.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE = f"energymon:{PYPROJECT['project']['version']}-docker"


def merged() -> dict:
    """docker-compose.yml with the override applied as compose merges services: mappings
    merged key by key, volumes by their target path, the override's scalars and lists winning."""
    base, override = load_compose(), load_yaml(OVERRIDE)
    for name, service in override["services"].items():
        target = base["services"][name]
        for key, value in service.items():
            if key == "environment":
                target[key] = {**target.get(key, {}), **value}
            elif key == "volumes":
                by_path = {v.split(":")[1]: v for v in target.get(key, [])}
                by_path.update({v.split(":")[1]: v for v in value})
                target[key] = list(by_path.values())
            else:
                target[key] = value
    return base


@pytest.mark.parametrize("document", ["override", "merged"])
@pytest.mark.parametrize("interpolated", [False, True], ids=["as written", "interpolated"])
def test_validates_against_the_compose_specification(document, interpolated):
    compose = load_yaml(OVERRIDE) if document == "override" else merged()
    if interpolated:
        compose = interpolate(compose, read_env_file())
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.fixture
def instance_config(tmp_path, monkeypatch):
    for name in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD",
                 "DAGSTER_POSTGRES_DB"):  # fmt: skip
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "x")
    shutil.copy(INSTANCE, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    return config


def test_the_instance_config_is_valid_and_builds_a_docker_run_launcher(instance_config):
    launcher = instance_config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    data = ConfigurableClassData(launcher["module"], launcher["class"],
                                 yaml.safe_dump(launcher["config"]))  # fmt: skip
    built = data.rehydrate(as_type=dagster_docker.DockerRunLauncher)
    assert built.networks == ["energymon_default"]
    assert built.env_vars == launcher["config"]["env_vars"]


def test_it_is_dagster_yaml_but_for_the_launcher():
    docker, production = load_yaml(INSTANCE), load_yaml(ROOT / "dagster.yaml")
    assert docker.pop("run_launcher")["class"] == "DockerRunLauncher"
    assert production.pop("run_launcher")["class"] == "DefaultRunLauncher"
    assert docker == production


def test_runs_get_the_image_network_volumes_and_environment_by_name():
    compose, config = merged(), load_yaml(INSTANCE)["run_launcher"]["config"]
    services = compose["services"]
    # The image: built with the `docker` extra, named for the runs by the code server.
    extra = PYPROJECT["project"]["optional-dependencies"]["docker"]
    dagster = next(
        d for d in PYPROJECT["project"]["dependencies"] if d.startswith("dagster-postgres")
    )
    assert extra == [f"dagster-docker=={dagster.split('==')[1]}"]  # pinned with the family
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon"):
        assert services[name]["image"] == IMAGE
        assert services[name]["build"]["args"] == {"ENERGYMON_EXTRAS": "docker"}
    assert f"--container-image {IMAGE}" in " ".join(services["dagster-code"]["command"])
    # The stack's network: compose names it <project>_default.
    assert config["network"] == f"{compose['name']}_default"
    # The spool and the compute logs: the stack's volumes, where the code server mounts them.
    code_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["dagster-code"]["volumes"]}
    for mount in config["container_kwargs"]["volumes"]:
        volume, path = mount.split(":")
        assert volume.removeprefix(f"{compose['name']}_") == code_mounts[path]
        assert code_mounts[path] in compose["volumes"]
    assert "/var/lib/energymon/spool" in {
        m.split(":")[1] for m in config["container_kwargs"]["volumes"]
    }
    # Environment: names only, exactly the code server's variables, each set on the daemon.
    names = config["env_vars"]
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*", n) for n in names), "names only, no values"
    assert names == list(services["dagster-code"]["environment"])
    assert set(names) <= set(services["dagster-daemon"]["environment"])
    daemon_env = interpolate(services["dagster-daemon"]["environment"], read_env_file())
    code_env = interpolate(services["dagster-code"]["environment"], read_env_file())
    assert {n: daemon_env[n] for n in names} == code_env
    # The daemon and the webserver use this instance config and reach the Docker API.
    for name in ("dagster-webserver", "dagster-daemon"):
        volumes = services[name]["volumes"]
        assert "./dagster.docker-launcher.yaml:/opt/dagster/home/dagster.yaml:ro" in volumes
        assert "/var/run/docker.sock:/var/run/docker.sock" in volumes
        assert services[name]["group_add"] == ["${ENERGYMON_DOCKER_GID:-999}"]
    secrets = [v for k, v in read_env_file().items() if "PASSWORD" in k and v]
    assert secrets and not any(secret in INSTANCE.read_text() for secret in secrets)


def test_the_docker_gid_variable_is_documented_once():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert len(re.findall(r"^\| `ENERGYMON_DOCKER_GID` \| `999` \|", text, re.M)) == 1
