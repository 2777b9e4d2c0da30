"""The cold runs' registry, built by the product code under test (bench/cold.py runs this
file with `python -P`, PYTHONPATH set to the product's folder, so a baseline worktree's
migrations and registry layer build its own registry): migrated with `db.upgrade`, the
shipped `sdm630` profile's registers imported, the seeded virtual meter disabled (nothing
serves it here), and one SDM630 meter per fleet member added through the registry layer.

`python -P bench/cold_registry.py CONFIG.json` with {"url", "members", "max_connections"};
prints the number of enabled meters. Imports nothing from bench (run without the repo root
on sys.path).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from energymon_pipeline.registry import db, queries
from energymon_pipeline.registry.profiles import import_profile

METER_TYPE = "sdm630"


def build(config: dict) -> int:
    engine = db.create_engine(config["url"])
    try:
        db.upgrade(engine)
        import_profile(engine, METER_TYPE)
        for meter in queries.list_meters(engine):
            queries.set_meter_enabled(engine, meter["id"], False)
        for member in config["members"]:
            fields = {
                "host": member["host"],
                "port": member["port"],
                "slave_address": member["unit"],
                "type": METER_TYPE,
                "description": f"bench meter {1 + member['index']}",
            }
            if config.get("max_connections"):
                fields["max_connections"] = config["max_connections"]
            queries.add_meter(engine, fields)
        return len(queries.list_meters(engine, enabled_only=True))
    finally:
        engine.dispose()


if __name__ == "__main__":
    print(build(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
