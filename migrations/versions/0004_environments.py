"""Environment images: image tiers, parents and pinning; the baseline image of
an experiment whose change runs on an environment of its own.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("snapshot_images") as batch:
        batch.add_column(sa.Column("tier", sa.String(16), nullable=False, server_default="snapshot"))
        batch.add_column(sa.Column("parent", sa.String(256)))
        batch.add_column(sa.Column("pinned", sa.Boolean))
    with op.batch_alter_table("experiment_records") as batch:
        batch.add_column(sa.Column("baseline_image", sa.String(256)))


def downgrade() -> None:
    with op.batch_alter_table("experiment_records") as batch:
        batch.drop_column("baseline_image")
    with op.batch_alter_table("snapshot_images") as batch:
        batch.drop_column("pinned")
        batch.drop_column("parent")
        batch.drop_column("tier")
