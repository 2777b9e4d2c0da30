"""The command groups of the `energymon` CLI, one module each; `energymon_pipeline.cli` holds
the root group and registers them."""
