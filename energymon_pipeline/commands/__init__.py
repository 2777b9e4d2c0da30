"""Command groups of the `energymon` CLI that live outside cli.py, each registered there with
`cli.add_command(...)`."""
