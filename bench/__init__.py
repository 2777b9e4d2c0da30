"""Benchmarks: `uv run python -m bench` (see bench/README.md). Never part of `make test`:
timings on shared machines are measurements to read, not assertions."""
