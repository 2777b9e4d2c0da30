"""The meter/register registry: tables, migrations, queries and CSV import.

Never imports dagster, so the CLI, the virtual server and the benchmarks use it directly.
"""
