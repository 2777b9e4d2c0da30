"""docker-compose.yml, checked without a Docker engine: it validates against the Compose
Specification schema (check-jsonschema's vendored copy), before and after interpolation with
config/.env.dev; and the stack's rules hold: pinned images, health checks and healthy
dependencies, no inline secrets, the volumes that must survive a re-create, ports on loopback
unless ENERGYMON_BIND_ADDRESS opens them, an env file with every variable compose uses."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources

import jsonschema
import pytest
from deployment_files import (
    ROOT,
    MissingVariable,
    compose_text,
    interpolate,
    load_compose,
    load_yaml,
    read_env_file,
    referenced_variables,
    resolved_compose,
    service_environment,
)

SERVICES = {
    "postgres",
    "influxdb",
    "grafana",
    "dagster-code",
    "dagster-webserver",
    "dagster-daemon",
    "virtual-server",
}
DAGSTER_SERVICES = ("dagster-code", "dagster-webserver", "dagster-daemon")
BIND = "${ENERGYMON_BIND_ADDRESS:-127.0.0.1}"
PINNED_TAG = re.compile(r"\d+(\.\d+)+(-[a-z0-9]+)*")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def compose_schema() -> dict:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))


def services(document=None) -> dict:
    return (document or load_compose())["services"]


def aliases(service: dict) -> set[str]:
    networks = service.get("networks") or {}
    if isinstance(networks, list):
        return set()
    return {alias for network in networks.values() for alias in (network or {}).get("aliases", [])}


def names_of(name: str) -> set[str]:
    """Every host name a service answers to on the compose network."""
    return {name} | aliases(services()[name])


@pytest.mark.parametrize("interpolated", [False, True], ids=["as written", "interpolated"])
def test_validates_against_the_compose_specification(interpolated):
    document = resolved_compose() if interpolated else load_compose()
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_services_of_the_stack():
    assert set(services()) == SERVICES


def test_images_are_pinned_never_latest():
    assert "latest" not in compose_text()
    for name, service in services().items():
        image = service.get("image")
        assert image, f"{name}: no image (a built image needs a tag too)"
        repository, _, tag = image.rpartition(":")
        assert repository and PINNED_TAG.fullmatch(tag), f"{name}: {image} is not pinned"
        if "build" in service:  # our own images carry the project's version
            assert tag == VERSION, f"{name}: {image} is not tagged {VERSION}"
    by_name = {name: service["image"] for name, service in services().items()}
    assert by_name["postgres"].startswith("postgres:16.")
    assert by_name["influxdb"].startswith("influxdb:1.8.")
    assert re.fullmatch(r"grafana/grafana:1[1-9]\.\d+\.\d+", by_name["grafana"])


def test_one_project_image_for_the_three_dagster_services():
    images = {services()[name]["image"] for name in DAGSTER_SERVICES}
    builds = [services()[name]["build"] for name in DAGSTER_SERVICES]
    assert images == {f"energymon:{VERSION}"}
    assert all(build == {"context": ".", "dockerfile": "Dockerfile"} for build in builds)
    assert services()["virtual-server"]["build"] == {
        "context": ".",
        "dockerfile": "virtual_server/Dockerfile",
    }


def test_every_service_has_a_health_check():
    for name, service in services().items():
        check = service.get("healthcheck") or {}
        assert not check.get("disable"), f"{name}: health check disabled"
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        assert {"interval", "timeout", "retries", "start_period"} <= set(check), name


def test_dependencies_wait_until_healthy():
    wanted = {
        "dagster-code": {"postgres", "influxdb", "virtual-server"},
        "dagster-webserver": {"postgres", "dagster-code"},
        "dagster-daemon": {"postgres", "dagster-code"},
        "grafana": {"influxdb"},
    }
    for name, service in services().items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        assert set(depends) == wanted.get(name, set()), name
        for dependency, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"


def test_no_inline_secrets():
    text = compose_text()
    for name, service in services().items():
        for key, value in service_environment(service).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", value), (
                    f"{name}: {key} must come from the env file as ${{{key}:?message}}"
                )
    for key, value in read_env_file().items():
        if SECRET_NAME.search(key):
            assert value not in text, f"the value of {key} is written into the compose file"
    assert "docker.sock" not in text  # runs execute in the code server, no Docker API


@pytest.mark.parametrize(
    "variable",
    sorted(key for key in read_env_file() if SECRET_NAME.search(key)),
)
def test_compose_refuses_to_start_without_a_password(variable):
    env = read_env_file()
    assert env[variable], f"{variable} has no development value in config/.env.dev"
    resolved_compose(env)  # complete: fine
    for missing in ({k: v for k, v in env.items() if k != variable}, {**env, variable: ""}):
        with pytest.raises(MissingVariable, match=variable):
            interpolate(load_compose(), missing)


def test_env_file_defines_every_variable_compose_uses():
    env = read_env_file()
    missing = sorted(referenced_variables(compose_text()) - set(env))
    assert not missing, f"config/.env.dev lacks {missing}"


def test_env_file_is_marked_as_development_values():
    text = (ROOT / "config" / ".env.dev").read_text(encoding="utf-8")
    assert "DEVELOPMENT VALUES" in text.splitlines()[1]
    for key, value in read_env_file().items():
        if SECRET_NAME.search(key):
            assert value.startswith("dev-only-"), f"{key}: a development password says so"


def volume_mounts(service: dict) -> dict[str, str]:
    """container path -> source (named volume or ./path)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        mounts[target] = source
    return mounts


def test_volumes_keep_what_must_survive_a_re_create():
    document = load_compose()
    declared = set(document["volumes"])
    expected = {
        "postgres": "/var/lib/postgresql/data",
        # meta, data and wal: the influxdb image keeps all three under /var/lib/influxdb.
        "influxdb": "/var/lib/influxdb",
        "grafana": "/var/lib/grafana",
    }
    for name, path in expected.items():
        source = volume_mounts(services()[name]).get(path)
        assert source in declared, f"{name}: {path} is not a named volume"
    influx_env = service_environment(services()["influxdb"])
    assert not {"INFLUXDB_META_DIR", "INFLUXDB_DATA_DIR", "INFLUXDB_DATA_WAL_DIR"} & set(
        influx_env
    ), "InfluxDB's directories moved out of the volume"
    assert "PGDATA" not in service_environment(services()["postgres"])
    code = services()["dagster-code"]
    spool_dir = service_environment(code)["ENERGYMON_SPOOL_DIR"]
    assert volume_mounts(code).get(spool_dir) in declared, "the spool is not a volume"
    # Compute logs the runs write in the code server are what the webserver shows.
    storage = {
        volume_mounts(services()[n]).get("/opt/dagster/home/storage") for n in DAGSTER_SERVICES
    }
    assert len(storage) == 1 and storage <= declared


def test_published_ports_bind_to_loopback_unless_configured():
    published = {}
    for name, service in services().items():
        for port in service.get("ports", []):
            assert isinstance(port, dict), f"{name}: use the long port syntax with host_ip"
            assert port["host_ip"] == BIND, f"{name}: port {port['target']} not bound to {BIND}"
            published[name] = int(port["published"])
    assert published["grafana"] == 3000 and published["dagster-webserver"] == 3001
    assert read_env_file()["ENERGYMON_BIND_ADDRESS"] == "127.0.0.1"
    ports = [p for s in resolved_compose()["services"].values() for p in s.get("ports", [])]
    assert {p["host_ip"] for p in ports} == {"127.0.0.1"}
    opened = resolved_compose({**read_env_file(), "ENERGYMON_BIND_ADDRESS": "0.0.0.0"})
    assert {p["host_ip"] for s in opened["services"].values() for p in s.get("ports", [])} == {
        "0.0.0.0"
    }


def test_safe_defaults():
    resolved = resolved_compose()["services"]
    assert resolved["influxdb"]["environment"]["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    assert resolved["dagster-code"]["environment"]["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    assert resolved["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    # The pipeline writes as the writer, Grafana reads as the reader; neither is the admin.
    code_env = service_environment(services()["dagster-code"])
    grafana_env = service_environment(services()["grafana"])
    assert "INFLUXDB_ADMIN_PASSWORD" not in code_env | grafana_env
    assert "INFLUXDB_WRITE_USER_PASSWORD" in code_env
    assert "INFLUXDB_READ_USER_PASSWORD" in grafana_env
    env = read_env_file()
    assert (
        len({env["INFLUXDB_ADMIN_USER"], env["INFLUXDB_WRITE_USER"], env["INFLUXDB_READ_USER"]})
        == 3
    )
    # Registry and Dagster storage: separate databases.
    code = resolved["dagster-code"]["environment"]
    assert code["POSTGRES_DB"] and code["DAGSTER_POSTGRES_DB"]
    assert code["POSTGRES_DB"] != code["DAGSTER_POSTGRES_DB"]


def test_services_find_each_other_under_the_names_the_env_file_uses():
    code = resolved_compose()["services"]["dagster-code"]["environment"]
    assert code["POSTGRES_HOST"] in names_of("postgres")
    assert code["INFLUXDB_HOSTNAME"] in names_of("influxdb")
    assert code["VIRTUAL_SERVER_HOST"] in names_of("virtual-server")
    # The original system's host names keep working for an env file or registry carried over.
    assert {"default_db"} <= names_of("postgres")
    assert {"influx"} <= names_of("influxdb")
    assert {"virtual_modbustcp_server"} <= names_of("virtual-server")
    # The seeded virtual meter (id 0) reads the port the virtual server listens on.
    virtual = resolved_compose()["services"]["virtual-server"]["environment"]
    assert code["VIRTUAL_SERVER_PORT"] == virtual["VIRTUAL_SERVER_PORT"] == "502"
    assert code["INFLUXDB_PORT"] == "8086"
    grafana = resolved_compose()["services"]["grafana"]["environment"]
    assert grafana["INFLUXDB_HOSTNAME"] in names_of("influxdb")
    assert grafana["INFLUXDB_DB"] == code["INFLUXDB_DB"]


def test_commands_of_the_dagster_services():
    code = " ".join(services()["dagster-code"]["command"])
    ensure = code.index("python /opt/energymon/ensure_databases.py")
    upgrade = code.index("energymon db upgrade")
    serve = code.index("exec dagster api grpc -m energymon_pipeline.definitions -h 0.0.0.0 -p 4000")
    assert ensure < upgrade < serve and code.count("&&") == 2  # each step must succeed
    assert services()["dagster-webserver"]["command"] == [
        "dagster-webserver", "-h", "0.0.0.0", "-p", "3001", "-w", "workspace.yaml"
    ]  # fmt: skip
    assert services()["dagster-daemon"]["command"] == [
        "dagster-daemon", "run", "-w", "workspace.yaml"
    ]  # fmt: skip
    [location] = load_yaml(ROOT / "workspace.yaml")["load_from"]
    assert location["grpc_server"]["host"] in names_of("dagster-code")
    assert location["grpc_server"]["port"] == 4000


def dagster_yaml_variables() -> set[str]:
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_yaml(ROOT / "dagster.yaml"))
    return found


def test_dagster_services_get_every_variable_dagster_yaml_reads():
    variables = dagster_yaml_variables()
    assert {"POSTGRES_HOST", "POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB"} <= variables
    for name in DAGSTER_SERVICES:
        environment = resolved_compose()["services"][name]["environment"]
        missing = {v for v in variables if not environment.get(v)}
        assert not missing, f"{name} lacks {sorted(missing)}"


# Documented pipeline options the code server deliberately does not get.
NOT_PASSED = {
    "INFLUXDB_ADMIN_USER": "least privilege: the pipeline writes as INFLUXDB_WRITE_USER",
    "INFLUXDB_ADMIN_PASSWORD": "least privilege: the pipeline writes as INFLUXDB_WRITE_USER",
}


def documented_variables(*sections: str) -> set[str]:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    found = set()
    for part in re.split(r"^## ", text, flags=re.MULTILINE):
        if part.split("\n", 1)[0].strip().startswith(sections):
            found |= set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", part, flags=re.MULTILINE))
    return found


def test_the_code_server_gets_every_documented_pipeline_option():
    documented = documented_variables("Schedules", "InfluxDB", "Spool", "Registry database")
    assert {
        "INFLUX_UPDATER_CRON_SECOND_TRIGGER",
        "INFLUXDB_DB",
        "ENERGYMON_SPOOL_DIR",
    } <= documented
    # The registry is PostgreSQL from POSTGRES_*; the local data folder is not used.
    documented -= {"ENERGYMON_DATABASE_URL", "ENERGYMON_DATA_DIR"}
    environment = service_environment(services()["dagster-code"])
    missing = sorted(documented - set(environment) - set(NOT_PASSED))
    assert not missing, f"dagster-code does not pass {missing} (docs/configuration.md)"


@pytest.mark.parametrize("service", DAGSTER_SERVICES)
def test_dagster_yaml_is_valid_with_the_environment_compose_gives(service, tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for key, value in resolved_compose()["services"][service]["environment"].items():
        monkeypatch.setenv(key, str(value))
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    config, _ = dagster_instance_config(str(tmp_path))
    storage = config["storage"]["postgres"]["postgres_db"]
    assert storage["db_name"] == {"env": "DAGSTER_POSTGRES_DB"}
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
