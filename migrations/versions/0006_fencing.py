"""Fencing: the controller's lease carries a generation that grows at every
takeover (every state-changing write of a controller names the generation it
was decided under), and sandboxes are recorded by the runtime's own id (a
Docker container id, a pod's UID) so that they are killed and removed by the
object created, never by a name a later leader may reuse.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("experiment_records") as batch:
        batch.add_column(sa.Column("sandbox_uid", sa.String(128)))
    with op.batch_alter_table("baseline_cache") as batch:
        batch.add_column(sa.Column("sandbox_uid", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("baseline_cache") as batch:
        batch.drop_column("sandbox_uid")
    with op.batch_alter_table("experiment_records") as batch:
        batch.drop_column("sandbox_uid")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("generation")
