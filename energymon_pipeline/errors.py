"""User-facing errors.

Anything a user can cause (a bad env var, a bad CSV row, an unknown meter id) raises an
`EnergymonError` whose message is one line naming the culprit and what is allowed. The CLI
prints that line and exits non-zero; only bugs produce tracebacks.
"""


class EnergymonError(Exception):
    """An error caused by input or environment, reported as one line without a traceback."""


class SettingsError(EnergymonError):
    """An environment variable has a value the system cannot use."""


class RegistryError(EnergymonError):
    """A registry operation was refused (bad row, unknown id, unreachable database)."""
