"""Links and serial lines: energy_meters gains the link settings and a serial port's.

A link is what meters share on the way to them: a Modbus TCP endpoint (host, port, framer) or
a local serial port. Its settings are columns of its meters' rows, so a meter stays one row
and the original's rows need nothing new: `max_connections` (NULL = 1) and
`inter_request_delay_ms` (NULL = 0); the pause after connecting is the existing
`connect_delay_s`. When a link's rows disagree, the poll takes the most careful value
(modbus/links.py).

A meter on a serial port (Modbus RTU) has `serial_port` (the device path) and its line
settings `baudrate`, `parity`, `stopbits`, `bytesize` (NULL = 9600, N, 1, 8); its `host` repeats
the path (for listings) and its `port` is 0. `serial_port` NULL is a Modbus TCP meter, which
every existing row is.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from energymon_pipeline.errors import RegistryError

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("energy_meters") as batch:
        batch.add_column(sa.Column("max_connections", sa.Integer, nullable=True))
        batch.add_column(sa.Column("inter_request_delay_ms", sa.Integer, nullable=True))
        batch.add_column(sa.Column("serial_port", sa.String(255), nullable=True))
        batch.add_column(sa.Column("baudrate", sa.Integer, nullable=True))
        batch.add_column(sa.Column("parity", sa.String(1), nullable=True))
        batch.add_column(sa.Column("stopbits", sa.Integer, nullable=True))
        batch.add_column(sa.Column("bytesize", sa.Integer, nullable=True))


def downgrade() -> None:
    raise RegistryError("downgrading the registry is not supported: restore a backup instead")
