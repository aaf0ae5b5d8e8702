"""server-side portal sessions, login throttle keys, one active config per authorization

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ONE_ACTIVE = "uq_vpn_configs_one_active_per_authorization"


def upgrade() -> None:
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("portal_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_portal_sessions_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_portal_sessions_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "login_throttle",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key_hash"),
    )
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_throttle_last_failure_at"), ["last_failure_at"], unique=False
        )

    # The old throttle's rows are a few minutes of failures: they are dropped, not converted.
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_failures_username"))
        batch_op.drop_index(batch_op.f("ix_login_failures_remote_addr"))
        batch_op.drop_index(batch_op.f("ix_login_failures_failed_at"))
    op.drop_table("login_failures")

    # Parallel /connect calls could leave two active configs of one authorization before this
    # revision: all but the newest are marked revoked, so the node API refuses them from now on
    # (they stay out of the CRL, which a migration cannot sign).
    op.execute(
        sa.text(
            "UPDATE vpn_configs SET revoked_at = CURRENT_TIMESTAMP "
            "WHERE authorization_id IS NOT NULL AND revoked_at IS NULL AND id < ("
            " SELECT MAX(newest.id) FROM vpn_configs AS newest"
            " WHERE newest.authorization_id = vpn_configs.authorization_id AND newest.revoked_at IS NULL)"
        )
    )
    op.create_index(
        _ONE_ACTIVE,
        "vpn_configs",
        ["authorization_id"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(_ONE_ACTIVE, table_name="vpn_configs")
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("remote_addr", sa.String(length=64), nullable=False),
        sa.Column("failed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failures_failed_at"), ["failed_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_failures_remote_addr"), ["remote_addr"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_failures_username"), ["username"], unique=False)
    op.drop_table("login_throttle")
    op.drop_table("portal_sessions")
