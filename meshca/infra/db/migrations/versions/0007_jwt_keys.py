"""JWT-SVID signing keys as CA generations: when a generation retired.

Revision ID: 0007
Revises: 0006

A JWT key (kind `jwt`) is a row like a root's: `serial` holds its kid, `certificate_pem` its
public key (PEM SubjectPublicKeyInfo). A retired JWT key stays in the bundle until the tokens
it signed expired, which counts from its retirement: `retired_at`. NULL on rows retired
before this revision (roots and intermediates do not need it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from meshca.infra.db.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ca_generations") as batch:
        batch.add_column(sa.Column("retired_at", UtcDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ca_generations") as batch:
        batch.drop_column("retired_at")
