"""Request and response bodies of the admin API (separate input and output models)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from meshca.core.crl import RevocationReason

NO_NUL = r"^[^\x00]*$"  # a text pattern: PostgreSQL refuses NUL in text (a 500, before)
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")


def _rfc3339_text(value: object) -> object:
    """Only RFC 3339 text: pydantic alone also takes `0.5` (Unix time) or `2026-01-01` (a date)."""
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time with a time zone, e.g. 2026-01-01T00:00:00Z")


Rfc3339Time = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]


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
    signing: bool = Field(description="true for the intermediate that signs new certificates "
                          "(the active JWT key signs new JWT-SVIDs)")
    in_bundle: bool = Field(description="a root or JWT key that is published in the trust bundle")


class RotationOut(BaseModel):
    automatic: bool = Field(description="false when the CA is plugged in: meshca rotates nothing")
    prepare_at: float | None = Field(description="fraction of a generation's life")
    activate_at: float | None
    publish_lead_seconds: int | None = Field(description="a new root is published this long "
                                             "before it signs")
    skew_seconds: int | None
    next_check: datetime | None = Field(description="when the rotator next has something due")
    last_error: str | None
    note: str


class PluggedOut(BaseModel):
    directory: str
    loaded_fingerprint: str | None
    last_error: str | None = Field(description="why the files on disk are not in use, if so")
    warnings: list[str]


class CaOut(BaseModel):
    mode: Literal["meshca", "plugged"]
    bundle_sequence: int
    rotation: RotationOut
    plugged: PluggedOut | None = None
    generations: list[CaGenerationOut]


class CaKindIn(BaseModel):
    kind: Literal["root", "intermediate", "jwt"] = Field(
        description="jwt: a JWT-SVID signing key (published in the bundle, like a root)")


class CaActivateIn(CaKindIn):
    waive_publish_lead: bool = Field(
        default=False, description="activate a root or JWT key published for less than the "
        "publish lead (peers that have not refreshed their bundle will reject what it signs)")


class TaintIn(BaseModel):
    reason: str = Field(default="", max_length=1024, pattern=NO_NUL)


class CaActionOut(BaseModel):
    action: str = Field(description="prepare | activate | withdraw | prune")
    kind: str
    generation_id: int | None
    retires: int | None = None
    reason: str


class CaChangeOut(BaseModel):
    actions: list[CaActionOut]
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
    reason: str = Field(default="", max_length=1024, pattern=NO_NUL)


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


class EcX509SvidKey(BaseModel):
    use: Literal["x509-svid"]
    kty: Literal["EC"]
    crv: Literal["P-256", "P-384", "P-521"]
    x: str
    y: str
    x5c: list[str] = Field(min_length=1, max_length=1, description="the root, base64 DER")


class RsaX509SvidKey(BaseModel):
    use: Literal["x509-svid"]
    kty: Literal["RSA"]
    n: str
    e: str
    x5c: list[str] = Field(min_length=1, max_length=1, description="the root, base64 DER")


class EcJwtSvidKey(BaseModel):
    use: Literal["jwt-svid"]
    kid: str = Field(description="the `kid` header of the JWT-SVIDs this key signs")
    kty: Literal["EC"]
    crv: Literal["P-256", "P-384", "P-521"]
    x: str
    y: str


class RsaJwtSvidKey(BaseModel):
    use: Literal["jwt-svid"]
    kid: str = Field(description="the `kid` header of the JWT-SVIDs this key signs")
    kty: Literal["RSA"]
    n: str
    e: str


X509SvidKey = Annotated[EcX509SvidKey | RsaX509SvidKey, Field(discriminator="kty")]
JwtSvidKey = Annotated[EcJwtSvidKey | RsaJwtSvidKey, Field(discriminator="kty")]


class SpiffeBundleOut(BaseModel):
    """A SPIFFE bundle (JWK Set): one `x509-svid` key per root, one `jwt-svid` key per
    published JWT-SVID signing key."""

    keys: list[Annotated[X509SvidKey | JwtSvidKey, Field(union_mode="left_to_right")]]
    spiffe_sequence: int
    spiffe_refresh_hint: int = Field(description="seconds")


class StatusOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    warnings: list[str] = []


class FederationIn(BaseModel):
    """A relationship with another trust domain. `trust_domain` is needed on POST only (PUT
    takes it from the path)."""

    model_config = ConfigDict(extra="forbid")

    trust_domain: str | None = Field(default=None, max_length=255)
    url: str = Field(max_length=2048, description="the bundle endpoint, https://…")
    profile: str = Field(default="https_web", description="https_web or https_spiffe")
    endpoint_spiffe_id: str | None = Field(
        default=None, max_length=2048, description="https_spiffe: the endpoint's SPIFFE ID")
    bootstrap_bundle: str | None = Field(
        default=None, max_length=1024 * 1024,
        description="https_spiffe: the endpoint's trust domain's roots for the first fetch "
                    "(PEM certificates or a SPIFFE bundle)")
    web_ca: str | None = Field(
        default=None, max_length=1024 * 1024,
        description="https_web: PEM CAs to verify the endpoint with instead of the system's")


class FederatedBundleOut(BaseModel):
    sequence: int | None
    fetched_at: datetime | None = Field(description="the last good fetch")
    changed_at: datetime | None
    x509_roots: int
    jwt_keys: int


class FederationOut(BaseModel):
    trust_domain: str
    url: str
    profile: str
    endpoint_spiffe_id: str | None
    from_flags: bool = Field(description="configured by --federate-with: not changed here")
    bundle: FederatedBundleOut | None = Field(description="the last good bundle, if any")
    last_attempt_at: datetime | None
    last_outcome: str | None = Field(description="ok, or why the last fetch failed")
    last_error: str | None
    next_fetch_at: datetime | None


class FederationListOut(BaseModel):
    items: list[FederationOut]
