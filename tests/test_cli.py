"""The `energymon` registry commands, on SQLite and the real PostgreSQL: what they print, their
exit status, and that a refused command writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from energymon_pipeline.registry import db

HEADER = (
    "type,register_address,measurement_name,data_unit,data_type,function_code,word_order,byte_order"
)

# The original production install's sdm630 map: FLOAT, FC 4, big/big, addresses 0-34 step 2,
# then 52, 56, 60, 62, 70-78 step 2 (27 rows).
SDM630_ADDRESSES = [*range(0, 35, 2), 52, 56, 60, 62, 70, 72, 74, 76, 78]


def sdm630_csv() -> str:
    lines = [HEADER] + [f"sdm630,{a},value{a},V,3,4,2,2" for a in SDM630_ADDRESSES]
    return "\n".join(lines) + "\n"


@pytest.fixture
def ready(energymon):
    result = energymon("db", "upgrade")
    assert result.exit_code == 0, result.stderr
    return energymon


def meter_ids(energymon) -> list[int]:
    result = energymon("meters", "list", "--json")
    assert result.exit_code == 0, result.stderr
    return [m["id"] for m in json.loads(result.stdout)]


def register_count(energymon) -> int:
    return len(json.loads(energymon("registers", "list", "--json").stdout))


def test_db_upgrade_reports_and_is_idempotent(energymon):
    first = energymon("db", "upgrade")
    assert first.exit_code == 0
    assert f"applied migration(s) {', '.join(db.revisions())}" in first.stdout
    second = energymon("db", "upgrade")
    assert second.exit_code == 0
    assert f"already up to date ({db.revisions()[-1]})" in second.stdout


def test_db_upgrade_reports_rows_polls_will_skip(energymon, registry_url):
    # Rows written past validation (by the original system or a SQL client) stay as they
    # are; the upgrade names them, one line each, and succeeds.
    assert energymon("db", "upgrade").exit_code == 0
    engine = db.create_engine(registry_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO energy_meters (id, host, port, slave_address, type, description) "
                "VALUES (5, 'h', 502, 1, 'virtual_modbustcp', :d)"
            ),
            {"d": "a\nb"},
        )
        connection.execute(
            sa.text(
                "INSERT INTO registers (type, register_address, measurement_name, data_type, "
                "function_code, word_order, byte_order) "
                "VALUES ('virtual_modbustcp', 9, '#x', 1, 3, 2, 2)"
            )
        )
    engine.dispose()
    result = energymon("db", "upgrade")
    assert result.exit_code == 0
    assert "already up to date" in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("warning: register row id ")
    assert "'#x'): skipped: measurement_name '#x' starts with '#'" in lines[0]
    assert lines[1] == (
        "warning: meter 5: skipped: description 'a\\nb' contains a line break; "
        "allowed: printable text on one line"
    )
    assert 5 in meter_ids(energymon)  # kept, not deleted


def test_commands_before_upgrade_say_what_to_do(energymon):
    result = energymon("meters", "list")
    assert result.exit_code == 1
    assert "run `energymon db upgrade` first" in result.stderr
    assert result.stderr.count("\n") == 1


def test_meters_add_list_disable_enable_remove(ready):
    added = ready(
        "meters", "add", "--host", "10.0.0.5", "--port", "502", "--unit", "3",
        "--type", "virtual_modbustcp", "--description", "hall A",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    assert added.stdout.strip() == "added meter 1"
    assert added.stderr == ""  # the type has registers: no warning
    table = ready("meters", "list").stdout.splitlines()
    assert table[0].split() == [
        "ID",
        "HOST",
        "PORT",
        "UNIT",
        "TYPE",
        "DESCRIPTION",
        "ENABLED",
        "GROUP",
        "LINK",
        "LAST",
        "CHECK",
    ]
    assert table[2].split() == ["1", "10.0.0.5", "502", "3", "virtual_modbustcp", "hall", "A", "yes", "default", "1", "conn,", "0", "ms", "gap,", "0", "s", "pause", "never", "checked"]  # fmt: skip

    assert ready("meters", "disable", "1").stdout.strip() == "meter 1 disabled"
    assert ready("meters", "disable", "1").stdout.strip() == "meter 1 was already disabled"
    listed = {m["id"]: m for m in json.loads(ready("meters", "list", "--json").stdout)}
    assert listed[1]["enabled"] is False
    assert listed[1]["updated_at"] >= listed[1]["created_at"]
    assert ready("meters", "enable", "1").stdout.strip() == "meter 1 enabled"

    assert ready("meters", "remove", "1").exit_code == 0
    assert meter_ids(ready) == [0]


def test_meter_ids_explicit_and_assigned(ready):
    assert ready("meters", "add", "--host", "a", "--port", "1", "--unit", "1", "--type",
                 "virtual_modbustcp", "--id", "10").exit_code == 0  # fmt: skip
    assert ready("meters", "add", "--host", "b", "--port", "1", "--unit", "1", "--type",
                 "virtual_modbustcp").stdout.strip() == "added meter 11"  # fmt: skip
    taken = ready("meters", "add", "--host", "c", "--port", "1", "--unit", "1", "--type",
                  "virtual_modbustcp", "--id", "10")  # fmt: skip
    assert taken.exit_code == 1
    assert "meter id 10 already exists" in taken.stderr
    assert meter_ids(ready) == [0, 10, 11]


def test_meter_of_a_type_without_registers_is_a_warning(ready):
    result = ready(
        "meters", "add", "--host", "h", "--port", "502", "--unit", "1", "--type", "sdm630"
    )
    assert result.exit_code == 0
    assert result.stderr.strip() == (
        "warning: meter 1: type 'sdm630' has no registers yet, so nothing will be read from "
        "it until registers of that type are imported"
    )
    assert meter_ids(ready) == [0, 1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "port 70000 is not allowed; allowed: 1-65535"),
        (["--port", "0"], "port 0 is not allowed; allowed: 1-65535"),
        (["--unit", "256"], "slave_address 256 is not allowed; allowed: 0-255 (Modbus unit id)"),
        (["--unit", "-1"], "slave_address -1 is not allowed; allowed: 0-255 (Modbus unit id)"),
        (["--host", "  "], "host is empty; allowed: 1 to 64 characters"),
        (["--host", "h" * 65], "is 65 characters long; allowed: at most 64"),
        (["--type", ""], "type is empty; allowed: 1 to 32 characters"),
        (["--timeout", "0"], "timeout_s 0.0 is not allowed; allowed: 0-600 seconds, above 0"),
        (
            ["--group", "north pole"],
            "poll_group 'north pole' is not allowed; allowed: 1-32 letters, digits, '-' or '_'",
        ),
        (
            ["--description", "hall\nB"],
            "description 'hall\\nB' contains a line break; allowed: printable text on one line",
        ),
        (["--description", "a\tb"], "description 'a\\tb' contains the control character U+0009"),
        (["--description", "C:\\"], "description 'C:\\\\' ends in a backslash"),
        (["--type", "sdm\r630"], "type 'sdm\\r630' contains a line break"),
        (["--host", "meter 1"], "host 'meter 1' is not a hostname or IP address; allowed: a name"),
        (["--host", "http://10.0.0.9"], "host 'http://10.0.0.9' is not a hostname or IP address"),
        (["--host", "10.0.0.9:502"], "host '10.0.0.9:502' is not a hostname or IP address"),
        (["--host", "10.0.0.300"], "host '10.0.0.300' is not a hostname or IP address"),
    ],
)
def test_meter_bad_input_is_one_line_and_writes_nothing(ready, args, message):
    base = {"--host": "10.0.0.9", "--port": "502", "--unit": "1", "--type": "virtual_modbustcp"}
    for flag, value in zip(args[::2], args[1::2], strict=False):
        base[flag] = value
    result = ready("meters", "add", *[x for pair in base.items() for x in pair])
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.startswith("error: meter not added: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert meter_ids(ready) == [0]


@pytest.mark.parametrize("command", [["remove", "42"], ["disable", "42"], ["enable", "42"]])
def test_unknown_meter_id(ready, command):
    result = ready("meters", *command)
    assert result.exit_code == 1
    assert result.stderr == "error: meter 42 does not exist; `energymon meters list` shows ids\n"


def test_import_the_original_sdm630_csv(ready, tmp_path):
    path = tmp_path / "registers.csv"
    path.write_text(sdm630_csv())
    result = ready("registers", "import", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"imported 27 register row(s) from {path}"
    rows = json.loads(ready("registers", "list", "--type", "sdm630", "--json").stdout)
    assert [r["register_address"] for r in rows] == SDM630_ADDRESSES
    assert {
        (r["data_type"], r["function_code"], r["word_order"], r["byte_order"]) for r in rows
    } == {(3, 4, 2, 2)}
    table = ready("registers", "list", "--type", "sdm630").stdout.splitlines()
    assert len(table) == 28 and table[0].split()[:5] == [
        "ID",
        "TYPE",
        "FC",
        "ADDRESS",
        "MEASUREMENT",
    ]


def test_import_extension_columns_any_order_and_bom(ready, tmp_path):
    path = tmp_path / "ext.csv"
    path.write_text(
        "\ufeffmeasurement_name,type,register_address,data_unit,data_type,function_code,"
        "word_order,byte_order,scale,offset,min_value,max_value\n"
        "energy,meter64,10,kWh,7,3,1,2,0.001,0,0,\n"
        "relay,meter64,0,,4,1,2,2,,,,\n",
        encoding="utf-8",
    )
    result = ready("registers", "import", str(path))
    assert result.exit_code == 0, result.stderr
    rows = {
        r["measurement_name"]: r
        for r in json.loads(ready("registers", "list", "--type", "meter64", "--json").stdout)
    }
    assert rows["energy"]["scale"] == 0.001 and rows["energy"]["min_value"] == 0.0
    assert rows["energy"]["max_value"] is None and rows["energy"]["data_type"] == 7
    assert rows["relay"]["data_unit"] is None and rows["relay"]["scale"] == 1.0
    assert rows["relay"]["function_code"] == 1


BAD_ROWS = [
    ("sdm630,0,v,V,9,4,2,2", "line 2, column data_type: data_type 9 is not allowed; allowed: 1 INT16, 2 INT32, 3 FLOAT32, 4 UINT16, 5 UINT32, 6 INT64, 7 UINT64, 8 FLOAT64"),
    ("sdm630,0,v,V,3,6,2,2", "line 2, column function_code: function_code 6 is not allowed; allowed: 1 coils, 2 discrete inputs, 3 holding registers, 4 input registers"),
    ("sdm630,0,v,V,3,4,3,2", "line 2, column word_order: word_order 3 is not allowed; allowed: 1 little-endian, 2 big-endian"),
    ("sdm630,0,v,V,3,4,2,0", "line 2, column byte_order: byte_order 0 is not allowed; allowed: 1 little-endian, 2 big-endian"),
    ("sdm630,65536,v,V,3,4,2,2", "line 2, column register_address: register_address 65536 is not allowed; allowed: 0-65535 (zero-based protocol address)"),
    ("sdm630,-1,v,V,3,4,2,2", "line 2, column register_address: register_address -1 is not allowed"),
    ("sdm630,65535,v,V,3,4,2,2", "line 2, column register_address: register_address 65535 with data_type 3 (FLOAT32, 2 registers) runs past 65535"),
    ("sdm630,x1,v,V,3,4,2,2", "line 2, column register_address: register_address x1 is not a whole number"),
    (",0,v,V,3,4,2,2", "line 2, column type: type is empty; allowed: 1 to 32 characters"),
    ("sdm630,0,,V,3,4,2,2", "line 2, column measurement_name: measurement_name is empty"),
    ("sdm630,0,v,kilowatthours,3,4,2,2", "line 2, column data_unit: data_unit 'kilowatthours' is 13 characters long; allowed: at most 8"),
    ("sdm630,0,v,V,3,4,2", "line 2, column *: has 7 fields; allowed: 8, one per header column"),
    ('sdm630,0,"a\nb",V,3,4,2,2', "line 2, column measurement_name: measurement_name 'a\\nb' contains a line break; allowed: printable text on one line"),
    ("sdm630,0,#v,V,3,4,2,2", "line 2, column measurement_name: measurement_name '#v' starts with '#', which InfluxDB line protocol reads as a comment"),
    ("sdm630,0,v,V\\,3,4,2,2", "line 2, column data_unit: data_unit 'V\\\\' ends in a backslash"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_import_bad_row_reports_line_column_reason_and_imports_nothing(
    ready, tmp_path, row, message
):
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n{row}\n")
    before = register_count(ready)
    result = ready("registers", "import", str(path))
    assert result.exit_code == 1
    assert f"error: {message}" in result.stderr
    assert result.stderr.splitlines()[-1] == "error: nothing imported: 1 bad row(s)"
    assert "Traceback" not in result.stderr
    assert register_count(ready) == before


def test_import_is_all_or_nothing_and_reports_every_bad_row(ready, tmp_path):
    path = tmp_path / "mixed.csv"
    good = [f"sdm630,{a},value{a},V,3,4,2,2" for a in range(0, 10, 2)]
    path.write_text("\n".join([HEADER, *good[:2], "sdm630,4,x,V,9,4,2,2", *good[2:],
                               "sdm630,0,value0,V,3,4,2,2", "sdm630,20,y,V,3,5,2,2"]) + "\n")  # fmt: skip
    result = ready("registers", "import", str(path))
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert errors[0].startswith("error: line 4, column data_type: data_type 9")
    assert errors[1].startswith("error: line 8, column measurement_name: duplicate of line 2")
    assert errors[2].startswith("error: line 9, column function_code: function_code 5")
    assert errors[-1] == "error: nothing imported: 3 bad row(s)"
    assert register_count(ready) == 1  # only the seeded virtual register


def test_import_refuses_rows_already_in_the_registry(ready, tmp_path):
    path = tmp_path / "registers.csv"
    path.write_text(sdm630_csv())
    assert ready("registers", "import", str(path)).exit_code == 0
    again = ready("registers", "import", str(path))
    assert again.exit_code == 1
    assert (
        "line 2, column measurement_name: type 'sdm630', function_code 4, register_address 0, measurement_name 'value0' already exists in the registry"
        in again.stderr
    )
    assert again.stderr.splitlines()[-1] == "error: nothing imported: 27 bad row(s)"
    assert register_count(ready) == 28


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file; expected the header type,register_address"),
        ("type,register_address\n", "line 1: missing column 'measurement_name'"),
        (HEADER + ",colour\n", "line 1: unknown column 'colour'; allowed: type, register_address"),
        (HEADER + ",type\n", "line 1: column 'type' appears twice"),
        (HEADER + "\n", "nothing imported: the input has no register rows"),
    ],
)
def test_import_bad_files(ready, tmp_path, content, message):
    path = tmp_path / "file.csv"
    path.write_text(content)
    result = ready("registers", "import", str(path))
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert register_count(ready) == 1


def test_import_missing_and_non_utf8_files(ready, tmp_path):
    missing = ready("registers", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 1
    assert missing.stderr == f"error: {tmp_path / 'nope.csv'}: no such file\n"
    latin = tmp_path / "latin.csv"
    latin.write_bytes((HEADER + "\nsdm630,0,Spannung \xe4,V,3,4,2,2\n").encode("latin-1"))
    result = ready("registers", "import", str(latin))
    assert result.exit_code == 1
    assert "not UTF-8 text" in result.stderr


def test_real_entry_point_prints_no_traceback(registry_url, tmp_path):
    """The installed `energymon` script, as a user runs it, on a user error."""
    env = {**os.environ, "ENERGYMON_DATABASE_URL": registry_url}
    bin_dir = os.path.dirname(sys.executable)
    upgrade = subprocess.run([os.path.join(bin_dir, "energymon"), "db", "upgrade"],
                             env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    result = subprocess.run(
        [os.path.join(bin_dir, "energymon"), "meters", "add", "--host", "h", "--port", "99999",
         "--unit", "1", "--type", "t"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        "error: meter not added: port 99999 is not allowed; allowed: 1-65535\n"
    )


def test_every_command_module_is_registered():
    """Each command group lives in its own module under energymon_pipeline/commands; a module
    whose command is not registered in cli.py would be unreachable."""
    import importlib
    import pkgutil

    import click

    import energymon_pipeline.commands as commands
    from energymon_pipeline.cli import cli

    top_level = set()
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        found = [v for v in vars(module).values() if isinstance(v, click.Command)]
        below = {c for v in found if isinstance(v, click.Group) for c in v.commands.values()}
        top_level |= {c for c in found if c not in below}
    assert {c.name for c in top_level} == set(cli.commands)
    assert set(cli.commands) >= {"db", "meters", "registers", "read", "probe", "spool"}


def test_module_entry_point_lists_every_command():
    """`python -m energymon_pipeline.cli` works like the installed `energymon` script."""
    result = subprocess.run([sys.executable, "-m", "energymon_pipeline.cli", "--help"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines()
              if line.strip()}  # fmt: skip
    assert listed == {"alerts", "db", "discover", "latest", "meters", "probe", "profiles",
                      "read", "registers", "spool"}  # fmt: skip
