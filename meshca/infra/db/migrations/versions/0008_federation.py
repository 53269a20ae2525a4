"""SPIFFE federation: relationships with other trust domains and their last good bundles.

Revision ID: 0008
Revises: 0007 (JWT-SVID keys)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from meshca.infra.db.schema import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation",
        sa.Column("trust_domain", sa.String(255), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("profile", sa.String(16), nullable=False),
        sa.Column("endpoint_spiffe_id", sa.Text, nullable=True),
        sa.Column("bootstrap_pem", sa.Text, nullable=True),
        sa.Column("web_ca_pem", sa.Text, nullable=True),
        sa.Column("from_flags", sa.Boolean, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("document", sa.Text, nullable=True),
        sa.Column("sequence", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=True),
        sa.Column("fetched_at", UtcDateTime, nullable=True),
        sa.Column("changed_at", UtcDateTime, nullable=True),
        sa.Column("attempted_at", UtcDateTime, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("next_fetch_at", UtcDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("federation")
