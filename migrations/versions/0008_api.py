"""The HTTP API's watch polls experiments by ``updated_at`` (twice a second,
one query for all watchers); the listing pages by (``created_at``, ``id``).

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_experiment_updated", "experiment_records", ["updated_at"])
    op.create_index("ix_experiment_listing", "experiment_records", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_experiment_listing", table_name="experiment_records")
    op.drop_index("ix_experiment_updated", table_name="experiment_records")
