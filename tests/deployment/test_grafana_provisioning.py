"""Grafana's provisioning files parse and fit together: one InfluxDB datasource reading as the
reader user with its password from the environment, a dashboard provider pointing where
docker-compose.yml mounts the dashboards, and dashboards whose every datasource reference is
that datasource. (That their queries return data is test_grafana_dashboard_queries.py.)"""

from __future__ import annotations

import json
import re

from deployment_files import (
    DASHBOARD_FILES,
    GRAFANA,
    load_compose,
    load_dashboards,
    load_yaml,
    service_environment,
)

DATASOURCES = GRAFANA / "datasources" / "datasource.yml"
PROVIDERS = GRAFANA / "dashboards" / "dashboards.yml"
TITLES = {
    "Energy overview",
    "Energy per day",
    "Pipeline health",
    "Test measurement (virtual meter)",
}


def grafana_service() -> dict:
    return load_compose()["services"]["grafana"]


def mounts() -> dict[str, str]:
    """container path -> host path of the Grafana service's bind mounts."""
    result = {}
    for volume in grafana_service()["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            result[target] = source[2:]
    return result


def datasource_uids() -> set[str]:
    return {source["uid"] for source in load_yaml(DATASOURCES)["datasources"]}


def test_datasource_reads_as_the_reader_with_its_password_from_the_environment():
    document = load_yaml(DATASOURCES)
    assert document["apiVersion"] == 1
    [source] = document["datasources"]
    assert source["type"] == "influxdb" and source["access"] == "proxy"
    assert source["url"] == "http://${INFLUXDB_HOSTNAME}:${INFLUXDB_PORT}"
    assert source["user"] == "${INFLUXDB_READ_USER}"
    assert source["secureJsonData"] == {"password": "${INFLUXDB_READ_USER_PASSWORD}"}
    assert "password" not in source and "basicAuthPassword" not in source
    assert source["jsonData"]["dbName"] == "${INFLUXDB_DB}"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["isDefault"] is True and source["editable"] is False
    # Every variable Grafana substitutes is in its container's environment.
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps(document)))
    assert used <= set(service_environment(grafana_service()))


def test_provisioning_folders_are_mounted_where_grafana_reads_them():
    assert mounts() == {
        "/etc/grafana/provisioning/datasources": "config/grafana/datasources",
        "/etc/grafana/provisioning/dashboards": "config/grafana/dashboards",
        "/etc/grafana/provisioning/alerting": "config/grafana/alerting",
    }
    [provider] = load_yaml(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    home = service_environment(grafana_service())["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder, _, file = home.rpartition("/")
    assert folder == provider["options"]["path"] and (GRAFANA / "dashboards" / file).is_file()


def references(node, path="") -> list[tuple[str, object]]:
    """Every `datasource` value in a dashboard, with where it is."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append((f"{path}.{key}", value))
            found += references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += references(value, f"{path}[{index}]")
    return found


def test_dashboards_use_the_provisioned_datasource_only():
    uids = datasource_uids()
    for name, dashboard in load_dashboards().items():
        refs = references(dashboard)
        assert refs, name
        for where, ref in refs:
            assert isinstance(ref, dict) and ref.get("type") == "influxdb", f"{name}{where}"
            assert ref.get("uid") in uids, f"{name}{where}: unknown datasource {ref}"


def test_the_dashboards():
    dashboards = load_dashboards()
    assert len(dashboards) == len(DASHBOARD_FILES) >= 4
    assert {d["title"] for d in dashboards.values()} == TITLES
    assert len({d["uid"] for d in dashboards.values()}) == len(dashboards)
    for name, dashboard in dashboards.items():
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            assert panel["targets"], f"{name}: {panel['title']} has no query"
            for target in panel["targets"]:
                # Raw InfluxQL: what Grafana sends is exactly what the query test ran.
                assert target["rawQuery"] is True and target["query"].strip(), panel["title"]
            # Panel types that exist in current Grafana (no Angular "graph"/"singlestat").
            assert panel["type"] in {
                "timeseries", "gauge", "stat", "table", "bargauge", "state-timeline"
            }, panel["type"]  # fmt: skip
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        if "meter" in variables:
            assert "description" in variables["meter"]["query"]
            assert variables["meter"]["includeAll"] and variables["meter"]["multi"]
    overview = next(d for d in dashboards.values() if d["title"] == "Energy overview")
    kinds = {panel["type"] for panel in overview["panels"]}
    assert {"timeseries", "gauge"} <= kinds
    titles = " ".join(panel["title"] for panel in overview["panels"])
    assert all(word in titles for word in ("power", "Voltages", "Currents"))
    test = next(d for d in dashboards.values() if d["title"].startswith("Test measurement"))
    assert sorted(panel["type"] for panel in test["panels"]) == ["gauge", "timeseries"]
    assert all("test_measurement" in p["targets"][0]["query"] for p in test["panels"])
    per_day = next(d for d in dashboards.values() if d["title"] == "Energy per day")
    queries = " ".join(p["targets"][0]["query"] for p in per_day["panels"])
    assert "energymon_rollup_1h" in queries and "energymon_rollup_1d" in queries
    health = next(d for d in dashboards.values() if d["title"] == "Pipeline health")
    queries = " ".join(t["query"] for p in health["panels"] for t in p["targets"])
    for measurement in ("energymon_poll", "energymon_spool", "energymon_connectivity"):
        assert f'"{measurement}"' in queries
