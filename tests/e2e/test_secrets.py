"""The registry password never leaves the environment: not through the unauthenticated
GraphQL API (resource details, run config, event log), not into the run storage or the
event log on disk, not into the processes' logs. The running system's ENERGYMON_DATABASE_URL
holds `REGISTRY_SECRET` (see e2e_system.py); a poll run has used it by the time we look."""

from __future__ import annotations

import json

from e2e_system import LOCATION, REGISTRY_SECRET, REPOSITORY

_RESOURCES_QUERY = """
query Resources($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      allTopLevelResourceDetails {
        name
        configuredValues { key value type }
        configFields { name description }
      }
    }
  }
}
"""

_RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      runConfigYaml
      tags { key value }
      eventConnection(afterCursor: null, limit: 10000) {
        events {
          __typename
          ... on MessageEvent { message }
          ... on ExecutionStepOutputEvent {
            metadataEntries {
              label
              ... on TextMetadataEntry { text }
              ... on MarkdownMetadataEntry { mdStr }
              ... on TableMetadataEntry { table { records } }
            }
          }
        }
      }
    }
  }
}
"""


def test_the_registry_password_is_nowhere_to_be_seen(running_system, poll_run):
    system = running_system
    assert REGISTRY_SECRET in system.env["ENERGYMON_DATABASE_URL"]  # the premise
    assert poll_run["status"] == "SUCCESS"  # the run connected to the registry with it

    # The resource as the UI's resource page shows it: the variable's name, not its value.
    data = system.gql(
        _RESOURCES_QUERY,
        {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}},
    )
    resources = {r["name"]: r for r in data["repositoryOrError"]["allTopLevelResourceDetails"]}
    assert {v["key"]: (v["type"], v["value"]) for v in
            resources["registry"]["configuredValues"]} == {
        "database_url": ("ENV_VAR", "ENERGYMON_DATABASE_URL")
    }  # fmt: skip
    assert REGISTRY_SECRET not in json.dumps(data)

    # The run as the UI's run page shows it: config, tags, every event and its metadata.
    run = system.gql(_RUN_QUERY, {"runId": poll_run["run_id"]})["runOrError"]
    assert run["__typename"] == "Run"
    assert len(run["eventConnection"]["events"]) > 10
    assert REGISTRY_SECRET not in json.dumps(run)

    # Everything Dagster stored (run and event log storage, schedule state, compute logs)
    # and both processes' logs, byte for byte.
    secret = REGISTRY_SECRET.encode()
    searched = []
    for path in [*sorted(system.dagster_home.rglob("*")), *system.logs.values()]:
        if path.is_file():
            searched.append(path.name)
            assert secret not in path.read_bytes(), f"the registry password is in {path}"
    assert any(name.endswith(".db") for name in searched), searched  # the SQLite storages
