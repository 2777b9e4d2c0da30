"""SunSpec layouts: what the connectivity check discovered on each `sunspec` meter.

One row per meter (deleted with it): the endpoint it was discovered at (link and unit id),
the base address of "SunS", the common model's identity (manufacturer, model, version,
serial number), the model ids in chain order, and the whole layout as JSON (each model's id,
address and length; devices/sunspec.py `SunSpecDevice.to_json`). A poll builds a meter's
registers from it and never rediscovers. Additive: no existing table or row changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from energymon_pipeline.errors import RegistryError

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sunspec_layouts",
        sa.Column(
            "meter_id",
            sa.Integer,
            sa.ForeignKey("energy_meters.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("endpoint", sa.String(300), nullable=False),
        sa.Column("base_address", sa.Integer, nullable=False),
        sa.Column("manufacturer", sa.String(64), nullable=True),
        sa.Column("model", sa.String(64), nullable=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("serial_number", sa.String(64), nullable=True),
        sa.Column("models", sa.String(512), nullable=False),
        sa.Column("layout", sa.Text, nullable=False),
        sa.Column("discovered_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    raise RegistryError("downgrading the registry is not supported: restore a backup instead")
