"""ENERGYMON_GROUP_TAGS: a poll group pinned to where it runs. Each scheduled run of a group
carries the group's tags; dagster-k8s's K8sRunLauncher reads `dagster-k8s/config` from them
(its own parser checks the tag here) and so places the group's pods by node selector with the
group's resources. Bad values fail the settings in one line naming the variable."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster_k8s.job import get_user_defined_k8s_config

from energymon_pipeline import settings
from energymon_pipeline.definitions import build_definitions
from energymon_pipeline.errors import SettingsError

K8S = {
    "pod_spec_config": {"node_selector": {"energymon/site": "north"}},
    "container_config": {"resources": {"requests": {"cpu": "1", "memory": "512Mi"},
                                       "limits": {"memory": "1Gi"}}},
}  # fmt: skip
ENV = {
    "ENERGYMON_POLL_GROUPS": "north,south",
    "ENERGYMON_GROUP_TAGS": json.dumps({"north": {"dagster-k8s/config": K8S, "site": "north"}}),
    "ENERGYMON_DATABASE_URL": "sqlite:///unused.sqlite",
}


def tick(defs: dg.Definitions, name: str) -> dg.RunRequest:
    schedule = defs.resolve_schedule_def(name)
    when = datetime(2026, 11, 27, 12, 36, tzinfo=UTC)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context,
    ):
        [request] = schedule.evaluate_tick(context).run_requests
    return request


def test_each_groups_runs_carry_its_tags_and_k8s_reads_them():
    defs = build_definitions(ENV)
    north, south = (tick(defs, f"poll_meters_schedule_{g}") for g in ("north", "south"))
    assert north.tags["energymon/poll_group"] == "north"
    assert north.tags["site"] == "north"
    config = get_user_defined_k8s_config(north.tags)
    assert config.pod_spec_config == {"node_selector": {"energymon/site": "north"}}
    assert config.container_config["resources"]["limits"] == {"memory": "1Gi"}
    # A group without tags is placed wherever the launcher's defaults say.
    assert "dagster-k8s/config" not in south.tags and "site" not in south.tags
    assert get_user_defined_k8s_config(south.tags).pod_spec_config == {}


def test_unset_means_no_tags():
    assert settings.pipeline({"ENERGYMON_POLL_GROUPS": "north"}).group_tags == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{north", "ENERGYMON_GROUP_TAGS is not JSON (Expecting property name enclosed in "
                   "double quotes at character 1); allowed: a JSON object of poll group"),
        ('["north"]', "ENERGYMON_GROUP_TAGS is not a JSON object; allowed:"),
        ('{"east": {"site": "e"}}', "ENERGYMON_GROUP_TAGS has tags for group 'east', which is "
                                    "not in ENERGYMON_POLL_GROUPS (north, south); allowed:"),
        ('{"north": "site=n"}', "ENERGYMON_GROUP_TAGS: the tags of group 'north' are not an "
                                "object; allowed:"),
        ('{"north": {"energymon/poll_group": "x"}}', "ENERGYMON_GROUP_TAGS: group 'north' has "
                                                     "the tag key 'energymon/poll_group'"),
        ('{"north": {"dagster/priority": "1"}}', "has the tag key 'dagster/priority'"),
        ('{"north": {"a b": "1"}}', "has the tag key 'a b'"),
        ('{"north": {"site": 3}}', "ENERGYMON_GROUP_TAGS: group 'north', tag 'site' has the "
                                   "value 3; allowed:"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line_errors(value, message):
    env = {"ENERGYMON_POLL_GROUPS": "north,south", "ENERGYMON_GROUP_TAGS": value}
    with pytest.raises(SettingsError) as raised:
        settings.pipeline(env)
    text = str(raised.value)
    assert message in text and text.startswith("ENERGYMON_GROUP_TAGS") and "\n" not in text
