"""The meter/register registry: tables, migrations, row validation, queries, CSV import,
device profiles and the definitions a poll reads.

Never imports dagster or the pipeline's settings (tests/test_layers.py): its callers pass the
database and the values migrations need, so the CLI, the virtual server and the benchmarks use
it directly.
"""
