"""CA journal: roots leave the bundle (pruned_at); the bundle's SPIFFE sequence.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from meshca.infra.db.schema import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ca_generations") as batch:
        batch.add_column(sa.Column("pruned_at", UtcDateTime, nullable=True))
    op.create_table(
        "bundle_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sequence", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("bundle_state")
    with op.batch_alter_table("ca_generations") as batch:
        batch.drop_column("pruned_at")
