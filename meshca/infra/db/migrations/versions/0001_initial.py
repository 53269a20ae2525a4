"""CA generations and issued certificates.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from meshca.infra.db.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ca_generations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("ca_generations.id"), nullable=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("serial", sa.String(40), nullable=False, unique=True),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("key_location", sa.Text, nullable=False),
        sa.Column("not_before", UtcDateTime, nullable=False),
        sa.Column("not_after", UtcDateTime, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("certificate_pem", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "issued_certificates",
        sa.Column("serial", sa.String(40), primary_key=True),
        sa.Column("spiffe_id", sa.Text, nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("service_account", sa.String(253), nullable=False),
        sa.Column("pod_name", sa.String(253), nullable=True),
        sa.Column("pod_uid", sa.String(64), nullable=True),
        sa.Column("not_before", UtcDateTime, nullable=False),
        sa.Column("not_after", UtcDateTime, nullable=False),
        sa.Column(
            "issuer_generation_id", sa.Integer, sa.ForeignKey("ca_generations.id"), nullable=False
        ),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("key_type", sa.String(32), nullable=False),
        sa.Column("issued_at", UtcDateTime, nullable=False),
        sa.Column("certificate_pem", sa.Text, nullable=False),
    )
    op.create_index("ix_issued_spiffe_id", "issued_certificates", ["spiffe_id"])
    op.create_index("ix_issued_namespace_sa", "issued_certificates", ["namespace", "service_account"])
    op.create_index("ix_issued_not_after", "issued_certificates", ["not_after"])


def downgrade() -> None:
    op.drop_table("issued_certificates")
    op.drop_table("ca_generations")
