"""The last token check of each certificate's lineage (maximum renewal age), and an index for
deleting audit rows by age (retention).

Revision ID: 0006
Revises: 0005

`token_checked_at` stays NULL on existing rows: they count their own `issued_at`, so the
upgrade rewrites nothing however many certificates are on record.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from meshca.infra.db.schema import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issued_certificates") as batch:
        batch.add_column(sa.Column("token_checked_at", UtcDateTime, nullable=True))
    op.create_index("ix_audit_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_at", "audit_log")
    with op.batch_alter_table("issued_certificates") as batch:
        batch.drop_column("token_checked_at")
