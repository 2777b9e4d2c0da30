"""meter_learnt_splits: values a meter refused to have read in a merged request.

Some devices answer exception code 2 (illegal data address) to any read that spans an
unmapped register. The poll then reads those values one by one and stores each here, so the
next runs (each a new process) plan them alone instead of failing the merged read again.

One row per (meter, function code, address) of a value read alone: plain columns the loader
checks row by row, so one bad row costs only itself. `register_map` is a digest of what the
meter's plan was made from (its type, the (function code, address, width) of its registers,
its plan options); a row whose digest is not the meter's current one is stale (the map
changed) and is ignored, and replaced on the next save. Removing a meter removes its rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from energymon_pipeline.errors import RegistryError

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meter_learnt_splits",
        sa.Column(
            "meter_id",
            sa.Integer,
            sa.ForeignKey("energy_meters.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("function_code", sa.Integer, primary_key=True),
        sa.Column("address", sa.Integer, primary_key=True),
        sa.Column("register_map", sa.String(64), nullable=False),
        sa.Column("learnt_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    raise RegistryError("downgrading the registry is not supported: restore a backup instead")
