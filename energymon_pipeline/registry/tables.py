"""The registry tables as SQLAlchemy Core objects.

Column for column compatible with the original system's `energy_meters` and `registers` (same
names, same integer codes); everything else is an additive extension whose default every old
row satisfies. The migrations in `migrations/` create or adopt this shape; this module is what
queries are written against.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

FRAMERS = ("socket", "rtu")

energy_meters = sa.Table(
    "energy_meters",
    metadata,
    # Explicit ids stay possible (the original inserted them by hand; id 0 is the virtual
    # meter); when none is given the registry assigns the next free one.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(64), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("slave_address", sa.Integer, nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("description", sa.String(64), nullable=True),
    # Extensions.
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("timeout_s", sa.Float, nullable=True),
    sa.Column("retries", sa.Integer, nullable=True),
    sa.Column("framer", sa.String(8), nullable=False, server_default="socket"),
    sa.Column("max_gap", sa.Integer, nullable=True),
    sa.Column("max_registers_per_request", sa.Integer, nullable=True),
    sa.Column("single_register_reads", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("connect_delay_s", sa.Float, nullable=True),
    sa.Column("request_delay_s", sa.Float, nullable=True),
    sa.Column("poll_group", sa.String(32), nullable=True),
    # The link's settings (migration 0005; see modbus/links.py): NULL = 1 and 0.
    sa.Column("max_connections", sa.Integer, nullable=True),
    sa.Column("inter_request_delay_ms", sa.Integer, nullable=True),
    # A meter on a local serial port (Modbus RTU); NULL serial_port = Modbus TCP.
    sa.Column("serial_port", sa.String(255), nullable=True),
    sa.Column("baudrate", sa.Integer, nullable=True),
    sa.Column("parity", sa.String(1), nullable=True),
    sa.Column("stopbits", sa.Integer, nullable=True),
    sa.Column("bytesize", sa.Integer, nullable=True),
)

registers = sa.Table(
    "registers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("register_address", sa.Integer, nullable=False),
    sa.Column("measurement_name", sa.String(64), nullable=False),
    sa.Column("data_unit", sa.String(8), nullable=True),
    # Nullable as in the original DDL (its CHECKs let NULL through); the loader reports and
    # skips such rows instead of crashing.
    sa.Column("data_type", sa.Integer, nullable=True),
    sa.Column("function_code", sa.Integer, nullable=True),
    sa.Column("word_order", sa.Integer, nullable=True),
    sa.Column("byte_order", sa.Integer, nullable=True),
    # Extensions.
    sa.Column("scale", sa.Float, nullable=False, server_default="1"),
    sa.Column("offset", sa.Float, nullable=False, server_default="0"),
    sa.Column("min_value", sa.Float, nullable=True),
    sa.Column("max_value", sa.Float, nullable=True),
    sa.Column("cumulative", sa.Boolean, nullable=False, server_default=sa.false()),
)

meter_status = sa.Table(
    "meter_status",
    metadata,
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

meter_learnt_splits = sa.Table(
    "meter_learnt_splits",
    metadata,
    sa.Column(
        "meter_id",
        sa.Integer,
        sa.ForeignKey("energy_meters.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("function_code", sa.Integer, primary_key=True),
    sa.Column("address", sa.Integer, primary_key=True),
    # Digest of the register map the split was learnt on; another digest means stale.
    sa.Column("register_map", sa.String(64), nullable=False),
    sa.Column("learnt_at", sa.DateTime(timezone=True), nullable=False),
)

# Alerts (migration 0007; see energymon_pipeline/alerts/). A meter's state after each poll:
# ok, degraded (answered, lost some values), failing (failed the last poll), down (failed
# ENERGYMON_ALERT_DOWN_AFTER polls in a row); `alerted` is what was last announced of it.
meter_states = sa.Table(
    "meter_states",
    metadata,
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

# The alert history; the meter's description, host and unit are copied in, so the history
# stays readable after the meter is edited or removed. `key` makes raising twice a no-op.
alerts = sa.Table(
    "alerts",
    metadata,
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
    sa.Index("alerts_raised_at", "raised_at"),
)

# The outbox: one row per alert and channel, queued until the channel took it.
alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
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
    # Whoever delivers holds the row until then (two sensors never send one row at once).
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Index("alert_deliveries_status", "status"),
)

#: The columns of the original `registers` table, in the order of the original CSV header.
ORIGINAL_REGISTER_COLUMNS = (
    "type",
    "register_address",
    "measurement_name",
    "data_unit",
    "data_type",
    "function_code",
    "word_order",
    "byte_order",
)
#: Optional extension columns a registers CSV may carry.
EXTENSION_REGISTER_COLUMNS = ("scale", "offset", "min_value", "max_value", "cumulative")
REGISTER_UNIQUE_KEY = ("type", "function_code", "register_address", "measurement_name")
