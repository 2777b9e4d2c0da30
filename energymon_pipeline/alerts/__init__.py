"""Meter-down and pipeline alerts: states, evaluation and delivery (no dagster here; the
sensors that drive them are in ops/alerts.py)."""
