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
    NUMBERINGS,
    import_profile,
    list_profiles,
    load_profile,
    profile_rows,
    profiles_markdown,
)
from energymon_pipeline.registry.validation import check_register

PROFILES_DIR = Path(__file__).resolve().parents[2] / "energymon_pipeline" / "registry" / "profiles"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "profiles.md"
#: Profiles users' registries, the virtual server and the tests already name: never renamed.
ESTABLISHED = {"sdm120", "sdm630", "sdm72d-m", "virtual-tlc10000", "virtual_modbustcp"}
VIRTUAL = {"virtual-tlc10000", "virtual_modbustcp"}
SHIPPED = sorted(path.stem for path in PROFILES_DIR.glob("*.csv"))
ENERGY_UNITS = {"Wh", "kWh", "MWh", "VArh", "kVArh", "MVArh", "VAh", "kVAh", "MVAh"}


def specs(name: str):
    result = []
    for _, row in profile_rows(name):
        clean, problems = check_register(row)
        assert problems == [], (name, row, problems)
        result.append(register_spec(clean))
    return result


def test_the_library_holds_at_least_20_real_devices_and_keeps_the_established_names():
    listed = {p.name for p in list_profiles()}
    assert listed == set(SHIPPED)
    assert listed >= ESTABLISHED
    real = listed - VIRTUAL
    assert len(real) >= 20, sorted(real)
    # Every CSV has its metadata file and nothing else lies beside them.
    files = {p.name for p in PROFILES_DIR.iterdir() if p.is_file()}
    assert files == {"__init__.py"} | {f"{n}.csv" for n in SHIPPED} | {f"{n}.toml" for n in SHIPPED}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_is_a_valid_documented_register_map(name):
    profile = load_profile(name)
    rows = profile_rows(name)
    assert profile.registers == len(rows) > 0 and profile.description
    assert profile.manufacturer and profile.models
    assert {row["type"] for _, row in rows} == {name}
    # Where its registers come from, and how that document numbers them.
    source = profile.source
    assert source is not None and source.title and source.numbering in NUMBERINGS
    assert (source.numbering == "none") == (name in VIRTUAL)
    # A signature, or the reason there is none.
    assert (profile.signature is None) != (profile.no_signature == "")
    registers = specs(name)
    # Unique measurement names: each is one series in InfluxDB.
    measurements = [r.measurement for r in registers]
    assert len(measurements) == len(set(measurements)), name
    # Zero-based protocol addresses, every value inside 0-65535.
    assert all(r.address >= 0 and r.end <= 65536 for r in registers)
    # Counters are energy, and energy is counted.
    for r in registers:
        assert r.cumulative == (r.unit in ENERGY_UNITS), (name, r.measurement, r.unit)
    # No two values of a profile overlap, and its plan reads each value once.
    occupied = [(int(r.function_code), a) for r in registers for a in range(r.address, r.end)]
    assert len(occupied) == len(set(occupied)), name
    plan = plan_requests(registers, PlanOptions())
    covered = [(int(q.function_code), a) for q in plan for a in range(q.address, q.end)]
    assert len(covered) == len(set(covered)), name  # requests do not overlap
    assert sorted(r.measurement for q in plan for r in q.registers) == sorted(measurements)
    assert all(q.count <= 125 for q in plan)


def test_a_signature_never_reads_what_the_pipeline_refuses():
    for profile in list_profiles():
        signature = profile.signature
        if signature is None:
            continue
        assert int(signature.function_code) in (3, 4), profile.name
        assert signature.address + signature.registers <= 65536
        assert bool(signature.values) != bool(signature.text), profile.name


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
def test_established_profiles_keep_their_registers(name, count, requests):
    registers = specs(name)
    assert len(registers) == count
    plan = plan_requests(registers, PlanOptions())
    assert len(plan) == requests


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith("sdm")])
def test_eastron_maps_fit_eastron_request_limits(name):
    # Eastron meters refuse a request for more than 30 values (60 registers) on older models.
    plan = plan_requests(specs(name), PlanOptions())
    assert all(request.count <= 60 for request in plan)


def test_eastron_maps_are_the_published_zero_based_addresses():
    sdm120 = {r.address: r.measurement for r in specs("sdm120")}
    assert sdm120[0] == "voltage" and sdm120[6] == "current" and sdm120[70] == "frequency"
    assert sdm120[72] == "importActiveEnergy" and sdm120[342] == "totalActiveEnergy"
    sdm72 = {r.address: r.measurement for r in specs("sdm72d-m")}
    assert sorted(sdm72) == [52, 72, 74, 342, 384, 388, 390, 1280, 1282]
    assert all(
        (r.data_type, r.function_code, r.word_order, r.byte_order) == (3, 4, 2, 2)
        for name in SHIPPED
        if name.startswith("sdm") or name == "virtual-tlc10000"
        for r in specs(name)
    )
    # A measurement name shared by Eastron maps of one kind means the same register in each.
    for family in (("sdm120", "sdm230"), ("sdm630", "sdm630-v2", "sdm72d-m", "sdm72d-m-v2")):
        seen: dict[str, int] = {}
        for name in family:
            for r in specs(name):
                assert seen.setdefault(r.measurement, r.address) == r.address, (name, r.measurement)


def test_the_docs_table_is_the_library():
    assert DOCS.read_text(encoding="utf-8").split("<!-- profiles table -->\n")[1] == (
        profiles_markdown()
    ), "docs/profiles.md is stale: run `energymon profiles list --markdown`"


def test_every_shipped_profile_imports_into_the_registry(migrated, fetch):
    for name in SHIPPED:
        if name == "virtual_modbustcp":  # the seeded row: already present
            continue
        result = import_profile(migrated, name)
        assert len(result.ids) == len(profile_rows(name)), name
    stored = dict(fetch(migrated, "SELECT type, COUNT(*) FROM registers GROUP BY type"))
    assert stored == {name: len(profile_rows(name)) for name in SHIPPED}
    counters = fetch(
        migrated, "SELECT COUNT(*) FROM registers WHERE type = 'sma-inverter' AND cumulative"
    )
    assert counters == [(2,)]


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
    assert str(unknown.value) == f"there is no profile 'sdm999'; available: {', '.join(SHIPPED)}"
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
    assert lines[0].split() == ["NAME", "REGISTERS", "DEVICE", "SOURCE"]
    assert [line.split()[0] for line in lines[1:]] == SHIPPED
    # Each line shows the profile's device and its source document.
    for line, profile in zip(lines[1:], list_profiles(), strict=True):
        assert profile.device in line and str(profile.source) in line, line
    assert "ABB B21" in listed.stdout and "2CMC485004M0201" in listed.stdout

    shown = cli("show", "SDM630")
    assert shown.exit_code == 0, shown.stderr
    assert "signature:    holding register 64514 (0xFC02), UINT16 = 112 (0x0070)" in shown.stdout
    assert "numbering:    modicon" in shown.stdout
    table = shown.stdout.split("registers:    27\n")[1].splitlines()
    assert table[0].split() == ["ADDRESS", "FC", "TYPE", "UNIT", "SCALE", "COUNTER", "MEASUREMENT"]
    assert table[1].split() == ["0", "4", "FLOAT32", "V", "1", "voltageL1"]
    assert table[-1].split() == ["78", "4", "FLOAT32", "kVArh", "1", "yes", "exportReactiveEnergy"]
    assert len(table) == 28
    markdown = cli("list", "--markdown")
    assert markdown.exit_code == 0 and markdown.stdout == profiles_markdown()

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
    assert unknown.stderr == f"error: there is no profile 'nope'; available: {', '.join(SHIPPED)}\n"
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


BAD_METADATA = [
    ("manufacturer = 'X'\n", "profile bad: bad.toml: description: missing"),
    ("description = 'd'\nmanufacturer = 'X'\nmodels = []\n",
     "profile bad: bad.toml: models: allowed: a non-empty list of model names"),
    ("description = 'd'\nmanufacturer = 'X'\nmodels = ['Y']\n[source]\ntitle = 'T'\n"
     "numbering = 'ones'\n",
     "profile bad: bad.toml: source.numbering: 'ones'; allowed: zero-based, one-based, modicon, "
     "none"),
    ("description = 'd'\nmanufacturer = 'X'\nmodels = ['Y']\n[source]\ntitle = 'T'\n"
     "numbering = 'modicon'\n[signature]\nfunction_code = 6\naddress = 1\n",
     "profile bad: bad.toml: signature.function_code: 6; allowed: 3 or 4"),
    ("description = 'd'\nmanufacturer = 'X'\nmodels = ['Y']\n[source]\ntitle = 'T'\n"
     "numbering = 'modicon'\n[signature]\nfunction_code = 3\naddress = 70000\n",
     "profile bad: bad.toml: signature.address: 70000 is outside 0-65535"),
    ("description = 'd'\nmanufacturer = 'X'\nmodels = ['Y']\n[source]\ntitle = 'T'\n"
     "numbering = 'modicon'\n[signature]\nfunction_code = 3\naddress = 1\n"
     "data_type = 'float32'\nvalues = [1]\n",
     "profile bad: bad.toml: signature.data_type: 'float32'; allowed: uint16, int16, uint32, int32"),
    ("description = 'd'\nmanufacturer = 'X'\nmodels = ['Y']\n[source]\ntitle = 'T'\n"
     "numbering = 'modicon'\n",
     "profile bad: bad.toml: signature: missing the [signature] table"),
    ("description = 'd\n", "profile bad: bad.toml: not valid TOML ("),
    (None, "profile bad: its metadata file bad.toml is missing"),
]  # fmt: skip


@pytest.mark.parametrize(("toml", "message"), BAD_METADATA)
def test_a_bad_profile_file_is_a_one_line_error(tmp_path, monkeypatch, cli, toml, message):
    """A damaged profile (as a user's edited copy or a broken package would be) is refused
    with one line naming the file and the key, by the loader and by the CLI."""
    import energymon_pipeline.registry.profiles as library

    (tmp_path / "bad.csv").write_text((PROFILES_DIR / "sdm120.csv").read_text().replace(
        "sdm120,", "bad,"))  # fmt: skip
    if toml is not None:
        (tmp_path / "bad.toml").write_text(toml)
    monkeypatch.setattr(library, "_entries", lambda: {p.name: p for p in tmp_path.iterdir()})
    with pytest.raises(RegistryError) as error:
        load_profile("bad")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    result = cli("list")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: " + message) and result.stderr.count("\n") == 1


def test_a_damaged_csv_is_a_one_line_error(tmp_path, monkeypatch):
    import energymon_pipeline.registry.profiles as library

    (tmp_path / "bad.csv").write_text("type,register_address\nbad,1\n")
    monkeypatch.setattr(library, "_entries", lambda: {p.name: p for p in tmp_path.iterdir()})
    with pytest.raises(RegistryError, match=r"^profile bad: line 1: missing column"):
        load_profile("bad")


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
        assert f"energymon_pipeline/registry/profiles/{name}.toml" in names
