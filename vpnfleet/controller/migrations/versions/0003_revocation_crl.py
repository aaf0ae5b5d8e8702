"""the published CRL, and an index of the revoked configs by expiry

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 13:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_REVOKED_BY_EXPIRY = "ix_vpn_configs_revoked_by_expiry"


def upgrade() -> None:
    op.create_table(
        "published_crl",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", sa.DateTime(), nullable=False),
        sa.Column("next_update", sa.DateTime(), nullable=False),
        sa.Column("revoked_count", sa.Integer(), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # The one row is there before any worker signs, so signing can lock it (crl.publish_crl);
    # empty, it is signed at the first revocation, pull or housekeeping run.
    op.execute(
        sa.text(
            "INSERT INTO published_crl (id, crl_number, this_update, next_update, revoked_count, pem) "
            "VALUES (1, 0, '1970-01-01 00:00:00', '1970-01-01 00:00:00', 0, '')"
        )
    )
    op.create_index(
        _REVOKED_BY_EXPIRY,
        "vpn_configs",
        ["expires_at"],
        sqlite_where=sa.text("revoked_at IS NOT NULL"),
        postgresql_where=sa.text("revoked_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(_REVOKED_BY_EXPIRY, table_name="vpn_configs")
    op.drop_table("published_crl")
