"""Authorization policies stored through the admin API, and the policy-set version.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from meshca.infra.db.schema import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIG = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "authz_policies",
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("version", _BIG, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "name", name="pk_authz_policies"),
    )
    op.create_table(
        "authz_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", _BIG, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("authz_state")
    op.drop_table("authz_policies")
