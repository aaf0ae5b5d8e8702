"""WireGuard configs: their peers (address, key, node) and the protocol of configs and log rows

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_IN_USE = "released_at IS NULL"
_IN_USE_INDEXES = (
    ("uq_wireguard_peers_ipv4_in_use", "ipv4"),
    ("uq_wireguard_peers_key_in_use", "public_key"),
)


def _protocol() -> sa.Column:
    return sa.Column("protocol", sa.String(length=16), nullable=False, server_default="openvpn")


def upgrade() -> None:
    with op.batch_alter_table("vpn_configs") as batch:
        batch.alter_column("serial_number", existing_type=sa.String(length=64), nullable=True)
        batch.add_column(_protocol())
    with op.batch_alter_table("connection_log") as batch:
        batch.add_column(_protocol())
    op.create_table(
        "wireguard_peers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "config_id",
            sa.Integer(),
            sa.ForeignKey("vpn_configs.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("node", sa.String(length=64), nullable=False, index=True),
        sa.Column("profile_id", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("ipv4", sa.String(length=64), nullable=False),
        sa.Column("ipv6", sa.String(length=64), nullable=True),
        sa.Column("allocated_at", sa.DateTime(), nullable=False),
        sa.Column("released_at", sa.DateTime(), nullable=True, index=True),
    )
    for name, column in _IN_USE_INDEXES:
        op.create_index(
            name,
            "wireguard_peers",
            ["node", column],
            unique=True,
            sqlite_where=sa.text(_IN_USE),
            postgresql_where=sa.text(_IN_USE),
        )


def downgrade() -> None:
    op.drop_table("wireguard_peers")
    with op.batch_alter_table("connection_log") as batch:
        batch.drop_column("protocol")
    with op.batch_alter_table("vpn_configs") as batch:
        batch.drop_column("protocol")
        batch.alter_column("serial_number", existing_type=sa.String(length=64), nullable=False)
