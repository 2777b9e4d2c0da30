"""registers.cumulative and energy_meters.poll_group.

`cumulative` marks counters (energy registers) whose hourly consumption the rollup job sums
from non-negative increments; `poll_group` splits meters into groups polled by separate runs.
Both default to what every existing row means: not a counter, the default group.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from energymon_pipeline.errors import RegistryError

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registers") as batch:
        batch.add_column(
            sa.Column("cumulative", sa.Boolean, nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("energy_meters") as batch:
        batch.add_column(sa.Column("poll_group", sa.String(32), nullable=True))


def downgrade() -> None:
    raise RegistryError("downgrading the registry is not supported: restore a backup instead")
