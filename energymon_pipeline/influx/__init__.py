"""InfluxDB 1.x output: line protocol points (points.py), the HTTP writer with classified errors
(writer.py) and the durable write-ahead spool in front of it (spool.py). No Dagster here, so
the CLI and the benchmarks use these modules directly."""
