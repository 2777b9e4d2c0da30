"""The bridging examples of virtual_server/README.md run as written: a user following the
README alone gets a bridge the pipeline's own reader polls (sources replaced by local fakes)."""

from __future__ import annotations

import itertools
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from energymon_pipeline.modbus.reader import read_meters_sync
from energymon_pipeline.modbus.types import (
    DataType,
    Endpoint,
    FunctionCode,
    MeterSpec,
    RegisterSpec,
)
from energymon_pipeline.registry.csv_import import parse_registers_csv
from energymon_pipeline.registry.definitions import register_spec
from energymon_pipeline.registry.validation import check_register
from virtual_server import VirtualModbusTCPServer

README = Path(__file__).resolve().parents[2] / "virtual_server" / "README.md"
_ids = itertools.count(55_000)


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def example(marker: str) -> dict:
    (code,) = [block for block in blocks("python") if marker in block]
    namespace = {"__name__": "readme_example"}  # not __main__: do not run forever
    exec(compile(code, f"README.md ({marker})", "exec"), namespace)
    return namespace


def read(port: int, registers):
    meter = MeterSpec(next(_ids), Endpoint("127.0.0.1", port, 1, timeout_s=2.0, retries=0),
                      "t", None, tuple(registers))  # fmt: skip
    (result,) = read_meters_sync([meter])
    return result


@pytest.fixture
def temperature_page():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"21.5\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/temperature.txt"
    server.shutdown()
    server.server_close()


def test_every_python_example_compiles():
    for index, code in enumerate(blocks("python")):
        compile(code, f"README.md python block {index}", "exec")


def test_the_thermometer_bridge_and_its_csv(temperature_page, refused_port):
    namespace = example("class Thermometer(Device)")
    (csv_text,) = [block for block in blocks("csv") if "thermometer" in block]
    rows, problems = parse_registers_csv(csv_text)
    assert problems == []
    (row,) = [check_register(r) for _, r in rows]
    assert row[1] == []
    registers = [register_spec(row[0])]

    namespace["URL"] = temperature_page
    with VirtualModbusTCPServer(namespace["Thermometer"]()) as server:
        result = read(server.port, registers)
        assert [r.value for r in result.readings] == [21.5]
        namespace["URL"] = f"http://127.0.0.1:{refused_port}/temperature.txt"
        server.set_datastore()
        result = read(server.port, registers)
    assert result.readings == [] and "modbus exception 11" in result.error


def test_the_original_form_example(monkeypatch):
    namespace = example("class Boiler(VirtualModbusTCPServer)")
    namespace["read_boiler"] = lambda: SimpleNamespace(flow_temperature=61.25, burner_starts=1234)
    registers = [
        RegisterSpec("flow", 0),
        RegisterSpec("starts", 0, DataType.INT16, FunctionCode.READ_HOLDING_REGISTERS),
    ]
    with namespace["Boiler"]() as server:
        assert [r.value for r in read(server.port, registers).readings] == [1234.0, 61.25]

        def unreachable():
            raise OSError("no route to boiler")

        namespace["read_boiler"] = unreachable
        server.set_datastore()
        result = read(server.port, registers)
    assert result.readings == [] and result.failed_values == 2
