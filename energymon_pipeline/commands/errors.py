"""User errors in a command group: one line on stderr, exit 1, no traceback.

The same behaviour as the top-level `energymon` group, so a group behaves the same whether
it runs under `energymon` or on its own (as the tests invoke it).
"""

from __future__ import annotations

from typing import Any

import click

from energymon_pipeline.errors import EnergymonError
from energymon_pipeline.registry.queries import ImportRefused

EXIT_USER_ERROR = 1


class UserErrorGroup(click.Group):
    """Turns EnergymonError anywhere below into one line per problem on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImportRefused as error:
            for problem in error.problems:
                click.echo(f"error: {problem}", err=True)
            click.echo(
                f"error: nothing imported: {len({p.line for p in error.problems})} bad row(s)",
                err=True,
            )
            ctx.exit(EXIT_USER_ERROR)
        except EnergymonError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_USER_ERROR)
