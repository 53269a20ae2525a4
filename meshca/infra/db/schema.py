"""Tables. Changes go through an Alembic migration in `migrations/versions`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

ca_generations = Table(
    "ca_generations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # root | intermediate | jwt (a JWT-SVID key: serial is its kid, certificate_pem its
    # public key) | plugged
    Column("kind", String(16), nullable=False),
    Column("parent_id", Integer, ForeignKey("ca_generations.id"), nullable=True),
    Column("subject", Text, nullable=False),
    Column("serial", String(40), nullable=False, unique=True),
    Column("key_type", String(16), nullable=False),
    Column("key_location", Text, nullable=False),
    Column("not_before", UtcDateTime, nullable=False),
    Column("not_after", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),  # prepared | active | retired | tainted
    Column("certificate_pem", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # A root or JWT key leaves the published bundle at pruned_at (it stays in the journal).
    Column("pruned_at", UtcDateTime, nullable=True),
    Column("retired_at", UtcDateTime, nullable=True),  # 0007: bounds a JWT key's tokens
)

bundle_state = Table(
    "bundle_state",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("sequence", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

issued_certificates = Table(
    "issued_certificates",
    metadata,
    Column("serial", String(40), primary_key=True),
    Column("spiffe_id", Text, nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("service_account", String(253), nullable=False),
    Column("pod_name", String(253), nullable=True),
    Column("pod_uid", String(64), nullable=True),
    Column("not_before", UtcDateTime, nullable=False),
    Column("not_after", UtcDateTime, nullable=False),
    Column("issuer_generation_id", Integer, ForeignKey("ca_generations.id"), nullable=False),
    Column("fingerprint_sha256", String(64), nullable=False),
    Column("key_type", String(32), nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("certificate_pem", Text, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("revocation_reason", String(32), nullable=True),
    # The identity's last token check (migration 0006); NULL on older rows means issued_at.
    Column("token_checked_at", UtcDateTime, nullable=True),
    Index("ix_issued_spiffe_id", "spiffe_id"),
    Index("ix_issued_namespace_sa", "namespace", "service_account"),
    Index("ix_issued_not_after", "not_after"),
    Index("ix_issued_order", "issued_at", "serial"),
)

blocked_identities = Table(
    "blocked_identities",
    metadata,
    Column("spiffe_id", String(2048), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("blocked_by", Text, nullable=False),
    Column("blocked_at", UtcDateTime, nullable=False),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_by", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=True),
    Index("ix_audit_at", "at"),  # retention deletes by age (migration 0006)
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", Text, nullable=False),
    # Grows by one whenever the lease changes hands: writes carry it to fence off a stale holder.
    Column("fencing", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# Authorization policies stored through the admin API (migration 0005).
authz_policies = Table(
    "authz_policies",
    metadata,
    Column("namespace", String(63), nullable=False),
    Column("name", String(253), nullable=False),
    Column("version", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("document", Text, nullable=False),  # the object as received, JSON
    Column("updated_by", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("namespace", "name", name="pk_authz_policies"),
)

authz_state = Table(
    "authz_state",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("version", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
)

# SPIFFE federation (migration 0008): one row per foreign trust domain, with the last good
# bundle and how its fetching goes; every replica reads it.
federation = Table(
    "federation",
    metadata,
    Column("trust_domain", String(255), primary_key=True),
    Column("url", Text, nullable=False),
    Column("profile", String(16), nullable=False),
    Column("endpoint_spiffe_id", Text, nullable=True),
    Column("bootstrap_pem", Text, nullable=True),
    Column("web_ca_pem", Text, nullable=True),
    Column("from_flags", Boolean, nullable=False),
    Column("updated_by", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("document", Text, nullable=True),
    Column("sequence", BigInteger().with_variant(Integer, "sqlite"), nullable=True),
    Column("fetched_at", UtcDateTime, nullable=True),
    Column("changed_at", UtcDateTime, nullable=True),
    Column("attempted_at", UtcDateTime, nullable=True),
    Column("outcome", String(32), nullable=True),
    Column("error", Text, nullable=True),
    Column("next_fetch_at", UtcDateTime, nullable=True),
)
