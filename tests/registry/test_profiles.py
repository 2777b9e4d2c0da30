"""Shipped device profiles: valid register maps, importable by name (all or nothing, identical
rows already present are fine, `--as` renames the type), on SQLite and PostgreSQL, through
the Python API and the `energymon profiles` commands."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from energymon_pipeline.commands.profiles import profiles
from energymon_pipeline.errors import RegistryError
from energymon_pipeline.modbus.plan import plan_requests
from energymon_pipeline.modbus.types import PlanOptions
from energymon_pipeline.registry import queries
from energymon_pipeline.registry.definitions import register_spec
from energymon_pipeline.registry.profiles import (
    import_profile,
    list_profiles,
    profile_rows,
)
from energymon_pipeline.registry.validation import check_register

PROFILES_DIR = Path(__file__).resolve().parents[2] / "energymon_pipeline" / "registry" / "profiles"
SHIPPED = {"sdm120", "sdm630", "sdm72d-m", "virtual-tlc10000", "virtual_modbustcp"}


def specs(name: str):
    result = []
    for _, row in profile_rows(name):
        clean, problems = check_register(row)
        assert problems == [], (name, row, problems)
        result.append(register_spec(clean))
    return result


def test_every_shipped_profile_is_a_valid_register_map():
    listed = {p.name: p for p in list_profiles()}
    assert set(listed) == SHIPPED
    for name, profile in listed.items():
        rows = profile_rows(name)
        assert profile.registers == len(rows) > 0 and profile.description
        assert {row["type"] for _, row in rows} == {name}
        registers = specs(name)
        # No two values of a profile overlap.
        occupied = [(int(r.function_code), a) for r in registers for a in range(r.address, r.end)]
        assert len(occupied) == len(set(occupied)), name


@pytest.mark.parametrize(
    ("name", "count", "requests"),
    [
        ("sdm630", 27, 2),
        ("sdm120", 22, 4),
        ("sdm72d-m", 9, 5),
        ("virtual-tlc10000", 2, 1),
        ("virtual_modbustcp", 1, 1),
    ],
)
def test_profiles_read_in_few_requests_within_eastron_limits(name, count, requests):
    registers = specs(name)
    assert len(registers) == count
    plan = plan_requests(registers, PlanOptions())
    assert len(plan) == requests
    # Eastron meters refuse a request for more than 30 values (60 registers).
    assert all(request.count <= 60 for request in plan)


def test_eastron_maps_are_the_published_zero_based_addresses():
    sdm120 = {r.address: r.measurement for r in specs("sdm120")}
    assert sdm120[0] == "voltage" and sdm120[6] == "current" and sdm120[70] == "frequency"
    assert sdm120[72] == "importActiveEnergy" and sdm120[342] == "totalActiveEnergy"
    sdm72 = {r.address: r.measurement for r in specs("sdm72d-m")}
    assert sorted(sdm72) == [52, 72, 74, 342, 384, 388, 390, 1280, 1282]
    assert all(
        (r.data_type, r.function_code, r.word_order, r.byte_order) == (3, 4, 2, 2)
        for name in ("sdm120", "sdm72d-m", "sdm630", "virtual-tlc10000")
        for r in specs(name)
    )


def test_import_is_idempotent_and_as_renames_the_type(migrated, fetch):
    first = import_profile(migrated, "sdm630")
    assert len(first.ids) == 27 and first.warnings == []
    again = import_profile(migrated, "SDM630")  # names match regardless of case
    assert again.ids == [] and again.warnings == ["27 identical row(s) were already present"]
    renamed = import_profile(migrated, "sdm630", as_type="sdm630-garage")
    assert len(renamed.ids) == 27
    counts = fetch(migrated, "SELECT type, COUNT(*) FROM registers GROUP BY type ORDER BY type")
    assert counts == [("sdm630", 27), ("sdm630-garage", 27), ("virtual_modbustcp", 1)]
    # The seeded virtual meter's row is the virtual_modbustcp profile: nothing to add.
    seeded = import_profile(migrated, "virtual_modbustcp")
    assert seeded.ids == [] and seeded.warnings == ["1 identical row(s) were already present"]


def test_a_conflicting_stored_row_refuses_the_whole_import(migrated, fetch):
    migrated_rows = [
        (1, {"type": "sdm120", "register_address": 12, "measurement_name": "activePower",
             "data_unit": "kW", "data_type": 3, "function_code": 4, "word_order": 2,
             "byte_order": 2})
    ]  # fmt: skip
    queries.insert_registers(migrated, migrated_rows)
    with pytest.raises(queries.ImportRefused) as refused:
        import_profile(migrated, "sdm120")
    (problem,) = refused.value.problems
    assert problem.line == 4  # the profile CSV's line of activePower
    assert "already exists in the registry" in problem.message
    assert fetch(migrated, "SELECT COUNT(*) FROM registers WHERE type = 'sdm120'") == [(1,)]


def test_unknown_profile_and_bad_type_are_one_line_errors():
    with pytest.raises(RegistryError) as unknown:
        profile_rows("sdm999")
    assert str(unknown.value) == (
        "there is no profile 'sdm999'; available: sdm120, sdm630, sdm72d-m, virtual-tlc10000, "
        "virtual_modbustcp"
    )
    with pytest.raises(RegistryError, match="is 33 characters long; allowed: 1 to 32"):
        profile_rows("sdm630", as_type="x" * 33)
    with pytest.raises(RegistryError, match="is 0 characters long"):
        profile_rows("sdm630", as_type="  ")


@pytest.fixture
def cli(registry_url, monkeypatch):
    monkeypatch.setenv("ENERGYMON_DATABASE_URL", registry_url)

    def run(*args: str):
        return CliRunner().invoke(profiles, list(args), catch_exceptions=False)

    return run


def test_cli_list_and_import(migrated, cli, fetch):
    listed = cli("list")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "REGISTERS", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == sorted(SHIPPED)

    imported = cli("import", "sdm72d-m", "--as", "sdm72")
    assert imported.exit_code == 0, imported.stderr
    assert imported.stdout.startswith("profile sdm72d-m: imported 9 of 9 register row(s) as type")
    again = cli("import", "sdm72d-m", "--as", "sdm72")
    assert again.exit_code == 0
    assert "imported 0 of 9" in again.stdout and "9 identical row(s)" in again.stdout
    assert fetch(migrated, "SELECT COUNT(*) FROM registers WHERE type = 'sdm72'") == [(9,)]


def test_cli_errors_are_one_line_and_exit_1(migrated, cli, fetch):
    unknown = cli("import", "nope")
    assert unknown.exit_code == 1
    assert unknown.stderr == (
        "error: there is no profile 'nope'; available: sdm120, sdm630, sdm72d-m, "
        "virtual-tlc10000, virtual_modbustcp\n"
    )
    queries.insert_registers(
        migrated,
        [(1, {"type": "virtual-tlc10000", "register_address": 0, "measurement_name": "power",
              "data_unit": "W", "data_type": 3, "function_code": 4, "word_order": 2,
              "byte_order": 2})],
    )  # fmt: skip
    conflict = cli("import", "virtual-tlc10000")
    assert conflict.exit_code == 1
    assert conflict.stderr.splitlines()[-1] == "error: nothing imported: 1 bad row(s)"
    assert "line 2, column measurement_name" in conflict.stderr
    assert fetch(migrated, "SELECT COUNT(*) FROM registers WHERE type = 'virtual-tlc10000'") == [
        (1,)
    ]


def test_cli_on_a_registry_without_tables(registry, cli):
    result = cli("import", "sdm630")
    assert result.exit_code == 1
    assert "run `energymon db upgrade` first" in result.stderr


def test_profiles_are_package_data_in_the_wheel(tmp_path):
    """hatchling packages every file under the package directories, so the CSVs ship; checked
    on a real wheel when one can be built offline, else on the build configuration."""
    import os
    import shutil
    import subprocess

    # `make test` passes the uv it bootstrapped (it may not be on PATH on a fresh machine).
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("uv is neither in $UV nor on PATH (make test sets UV)")
        pytest.skip("uv is not on PATH")
    project = PROFILES_DIR.parents[2]
    build = subprocess.run(
        [uv, "build", "--wheel", "--offline", "--out-dir", str(tmp_path), str(project)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel offline here: {build.stderr.strip()[-200:]}")
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SHIPPED:
        assert f"energymon_pipeline/registry/profiles/{name}.csv" in names
