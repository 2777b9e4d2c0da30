"""InfluxDB 1.x output: line protocol points (points.py), the poll health points
(poll_health.py), the HTTP writer with classified errors (writer.py), the durable write-ahead
spool in front of it (spool.py) and the one write path over both (write_path.py), retention
durations (retention.py), rollups and the newest values read back (rollup.py, latest.py).

Never imports dagster or the pipeline's settings (tests/test_layers.py), so the CLI and the
benchmarks use these modules directly."""
