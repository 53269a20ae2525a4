"""Revocation, blocked identities, admin tokens, audit log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from meshca.infra.db.schema import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issued_certificates") as batch:
        batch.add_column(sa.Column("revoked_at", UtcDateTime, nullable=True))
        batch.add_column(sa.Column("revocation_reason", sa.String(32), nullable=True))
    op.create_index("ix_issued_order", "issued_certificates", ["issued_at", "serial"])
    op.create_table(
        "blocked_identities",
        sa.Column("spiffe_id", sa.String(2048), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("blocked_by", sa.Text, nullable=False),
        sa.Column("blocked_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "admin_tokens",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("admin_tokens")
    op.drop_table("blocked_identities")
    op.drop_index("ix_issued_order", "issued_certificates")
    with op.batch_alter_table("issued_certificates") as batch:
        batch.drop_column("revocation_reason")
        batch.drop_column("revoked_at")
