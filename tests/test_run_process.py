"""What a poll run's process pays for before and after its ops: every run is a new process
that imports the code location, so what it imports and checks is paid every minute."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg
import numpy as np
import pandas as pd

from energymon_pipeline import readings
from energymon_pipeline.modbus.reader import MeterResult, Reading
from energymon_pipeline.modbus.types import DataType, Endpoint, MeterSpec, RegisterSpec
from energymon_pipeline.ops.types import ReadingsFrame
from energymon_pipeline.readings_model import ReadingsModel

NOT_FOR_A_RUN = ("alembic", "energymon_pipeline.commands", "virtual_server", "sunspec2")
#: Imported by a run after its read or in its wait for its first second (ops/run_process.py), not
#: with the code location.
AFTER_THE_READ = ("pandas", "pandera", "dagster_pandera", "influxdb", "requests")


def _loaded_by(script: str) -> list[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import json, sys\n{script}\nprint(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "dagster" in loaded and "energymon_pipeline.ops.poll" in loaded  # the walk is real
    return loaded


def _of(loaded: list[str], packages: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if m.split(".")[0] in packages or m.startswith(packages)]


def test_loading_the_code_location_imports_no_migrations_cli_or_simulator():
    """A run process loads energymon_pipeline.definitions; Alembic (migrations), the CLI and
    the virtual server are imported where they are used, never by a poll run."""
    assert _of(_loaded_by("import energymon_pipeline.definitions"), NOT_FOR_A_RUN) == []


def test_pandas_is_imported_after_the_code_location():
    """Not with the code location (a run imports it before its first request); a scheduled
    run imports it while it waits for its first second, when the wait leaves time."""
    loaded = _loaded_by("import energymon_pipeline.definitions")
    assert _of(loaded, AFTER_THE_READ) == []
    no_time = _loaded_by(
        "import time\n"
        "import energymon_pipeline.definitions\n"
        "from energymon_pipeline.ops import run_process\n"
        "assert not run_process.import_before(time.time() + 0.5)"
    )
    assert _of(no_time, AFTER_THE_READ) == []
    warmed = _loaded_by(
        "import time\n"
        "import energymon_pipeline.definitions\n"
        "from energymon_pipeline.ops import run_process\n"
        "assert run_process.import_before(time.time() + 30)"
    )
    assert {"pandas", "energymon_pipeline.readings"} <= set(warmed)
    # The model is the tests' only; InfluxDB is written to through the standard library.
    assert _of(warmed, ("pandera", "dagster_pandera", "influxdb", "requests")) == []


def test_a_run_freezes_what_its_process_holds_before_its_ops_allocate():
    """The poll's first op moves the process's long-lived objects (Dagster, our modules) out of
    the collector's way: later collections walk only what the run makes."""
    import gc

    from energymon_pipeline.ops import run_process

    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        run_process.freeze_heap()
        assert gc.get_freeze_count() > 10_000  # dagster and energymon's modules, at least
    finally:
        gc.unfreeze()


def _results() -> list[MeterResult]:
    meter = MeterSpec(
        meter_id=7,
        endpoint=Endpoint(host="127.0.0.1", port=502, unit_id=1),
        meter_type="sdm630",
        description="main",
        registers=(
            RegisterSpec(measurement="voltage", address=0, data_type=DataType.FLOAT32, unit="V"),
        ),
    )
    result = MeterResult(meter=meter)
    result.readings.append(Reading(1_764_000_000.0, meter.registers[0], 230.5))
    return [result]


def test_the_readings_type_accepts_the_validated_frame_without_validating_it_again():
    frame = readings.validate(_results()).frame
    assert dg.check_dagster_type(ReadingsFrame, frame).success
    assert dg.check_dagster_type(ReadingsFrame, readings.empty_frame()).success


def test_the_readings_type_shows_what_dagster_pandera_derives_from_the_model():
    """The UI's name, description and column schema are the pandera model's, written out as
    data so that a run does not import pandera (readings_schema.py)."""
    import warnings

    from dagster_pandera import pandera_schema_to_dagster_type

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        derived = pandera_schema_to_dagster_type(ReadingsModel)
    assert ReadingsFrame.unique_name == derived.unique_name == "ReadingsModel"
    assert ReadingsFrame.description == derived.description
    assert ReadingsFrame.metadata == derived.metadata


def test_the_readings_type_refuses_what_validate_did_not_build():
    frame = readings.validate(_results()).frame
    wrong = {
        "a list": [1, 2],
        "a missing column": frame.drop(columns=["unit"]),
        "reordered columns": frame[list(reversed(frame.columns))],
        "naive times": frame.assign(time=frame["time"].dt.tz_localize(None)),
        "text values": frame.assign(value=frame["value"].astype(str)),
    }
    for what, value in wrong.items():
        check = dg.check_dagster_type(ReadingsFrame, value)
        assert not check.success, what
        assert check.description, what
    assert isinstance(frame, pd.DataFrame)


def test_validate_builds_frames_the_pandera_model_accepts():
    """validate builds the frame to ReadingsModel column by column instead of having pandera
    re-check every row in each run: every shape it builds must pass the model."""
    volts = RegisterSpec(measurement="voltage", address=0, unit="V", min_value=0, max_value=300)
    count = RegisterSpec(measurement="energy", address=2, unit=None, cumulative=True)
    bare = MeterSpec(
        meter_id=0,
        endpoint=Endpoint(host="127.0.0.1", port=502, unit_id=2),
        meter_type="x",
        description=None,
        registers=(volts, count),
    )
    shapes = {
        "one value": _results(),
        "nothing read": [MeterResult(meter=bare)],
        "dropped and kept, no description or unit, two samples": [MeterResult(meter=bare)],
    }
    shapes["dropped and kept, no description or unit, two samples"][0].add(
        1_764_000_000.0, (volts, count), np.array([400.0, 12.5])
    )
    shapes["dropped and kept, no description or unit, two samples"][0].add(
        1_764_000_060.0, (volts, count), np.array([231.0, np.nan])
    )
    for what, results in shapes.items():
        validated = readings.validate(results)
        checked = ReadingsModel.validate(validated.frame)
        assert list(checked.dtypes) == list(validated.frame.dtypes), what
    frame = readings.validate(shapes["dropped and kept, no description or unit, two samples"])
    assert frame.frame["value"].tolist() == [12.5, 231.0]
    assert frame.dropped == {(0, "above max_value"): 1, (0, "not finite"): 1}
