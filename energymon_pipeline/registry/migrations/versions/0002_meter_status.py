"""meter_status: the last connectivity check of each meter.

Written by connectivity_check_job, shown by `energymon meters list`. One row per meter,
replaced on every check; removing a meter removes its status.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from energymon_pipeline.errors import RegistryError

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meter_status",
        sa.Column(
            "meter_id",
            sa.Integer,
            sa.ForeignKey("energy_meters.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("message", sa.String(512), nullable=True),
    )


def downgrade() -> None:
    raise RegistryError("downgrading the registry is not supported: restore a backup instead")
