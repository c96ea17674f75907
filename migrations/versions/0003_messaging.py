"""Messaging: the reply subject a request asked for, and outbox routing.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("experiment_records") as batch:
        batch.add_column(sa.Column("reply_to", sa.String(256)))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("durable", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("attempts")
        batch.drop_column("durable")
    with op.batch_alter_table("experiment_records") as batch:
        batch.drop_column("reply_to")
