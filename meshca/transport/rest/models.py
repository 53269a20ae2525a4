"""Request and response bodies of the admin API (separate input and output models)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from meshca.core.crl import RevocationReason


class CaGenerationOut(BaseModel):
    id: int
    kind: str
    parent_id: int | None
    subject: str
    serial: str
    key_type: str
    key_location: str
    not_before: datetime
    not_after: datetime
    state: str
    signing: bool = Field(description="true for the intermediate that signs new certificates")


class CaOut(BaseModel):
    generations: list[CaGenerationOut]


class CertificateOut(BaseModel):
    serial: str
    spiffe_id: str
    namespace: str
    service_account: str
    pod_name: str | None
    pod_uid: str | None
    not_before: datetime
    not_after: datetime
    issuer_generation_id: int
    fingerprint_sha256: str
    key_type: str
    issued_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None


class CertificateDetailOut(CertificateOut):
    certificate_pem: str


class CertificatePage(BaseModel):
    items: list[CertificateOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class RevokeIn(BaseModel):
    reason: RevocationReason = Field(description="RFC 5280 reason code")


class BlockIn(BaseModel):
    reason: str = Field(default="", max_length=1024)


class BlockedOut(BaseModel):
    spiffe_id: str
    reason: str
    blocked_by: str
    blocked_at: datetime


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: str | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class TokenCreateIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    role: Literal["viewer", "operator", "admin"]


class TokenCreatedOut(BaseModel):
    name: str
    role: str
    token: str = Field(description="shown once; meshca keeps only its SHA-256")


class TokenOut(BaseModel):
    name: str
    role: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class StatusOut(BaseModel):
    status: str
