"""the connection log names the node's process that handed out the address

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connection_log") as batch:
        batch.add_column(sa.Column("process", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connection_log") as batch:
        batch.drop_column("process")
