"""meter_states, alerts and alert_deliveries: what the alerts are made from and what they were.

Every poll run is a new process, so what the alerts need to remember lives here: each meter's
state after its last poll (`meter_states`, one row per meter, updated by one statement per
run; removing a meter removes its state), the alert history (`alerts`, with the meter's
description, host and unit copied in so it outlives the meter's row) and the outbox
(`alert_deliveries`, one row per alert and channel: `queued` until the channel took it, then
`sent`; never sent again once sent).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from energymon_pipeline.errors import RegistryError

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meter_states",
        sa.Column(
            "meter_id",
            sa.Integer,
            sa.ForeignKey("energy_meters.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_poll_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_outcome", sa.String(16), nullable=False),
        sa.Column("last_ok_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(512), nullable=True),
        sa.Column("alerted", sa.String(16), nullable=True),
        sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("meter_id", sa.Integer, nullable=True),
        sa.Column("meter_description", sa.String(64), nullable=True),
        sa.Column("meter_host", sa.String(255), nullable=True),
        sa.Column("meter_unit", sa.Integer, nullable=True),
        sa.Column("reason", sa.String(1024), nullable=True),
        sa.Column("text", sa.String(2048), nullable=False),
    )
    op.create_index("alerts_raised_at", "alerts", ["raised_at"])
    op.create_table(
        "alert_deliveries",
        sa.Column(
            "alert_id",
            sa.Integer,
            sa.ForeignKey("alerts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("alert_deliveries_status", "alert_deliveries", ["status"])


def downgrade() -> None:
    raise RegistryError("downgrading the registry is not supported: restore a backup instead")
