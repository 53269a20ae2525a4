"""Mint a JWT-SVID for an authenticated workload, and hand out the bundles: the use cases of
`meshca.v1.SvidService` (api/meshca/v1/svid.proto).

Callers authenticate exactly as for CreateCertificate (`IssuanceService.authenticate`): a
service-account token, with `clusterid` where several clusters call; a node agent named in
--trusted-node-account may mint for a workload on its node (`spiffe_id`). A client
certificate alone is not enough: a JWT-SVID is a bearer credential that can be replayed
wherever its audience accepts it, so minting one always rests on a fresh token check (a
certificate renewal rests on the lineage's last token check, which a JWT would stretch).

Refusals are counted and summarised in the audit log like issuance's; a mint is not audited
(it is counted in metrics), as an issued certificate is recorded but not audited.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from meshca.core import jwt_signing
from meshca.core.authority import SigningAuthority
from meshca.core.clock import Clock
from meshca.core.jwt_signing import JwtKeySet, MintedJwt
from meshca.core.remote_signing import LocalSigner, SignerUnavailable
from meshca.core.spiffe_bundle import spiffe_jwks
from meshca.errors import AuthenticationError, CaUnavailable, PermissionDenied, RateLimited
from meshca.service.federation_ports import FederatedBundles, NoFederation
from meshca.service.issuance import (
    IMPERSONATED_IDENTITY,
    Caller,
    CertificateRequest,
    IssuanceService,
)
from meshca.service.ports import BlockedIdentities
from meshca.service.rate_limits import IssuanceRateLimits
from meshca.service.refusal_summary import source_address

MINT = "MintJWTSVID"
BUNDLES = "GetBundles"


@dataclass(frozen=True, slots=True)
class SvidCall:
    """Who is calling, free of gRPC types (as `CertificateRequest` for CreateCertificate)."""

    authorization: Sequence[str]
    cluster_id: str | None = None
    peer: str = ""


@dataclass(frozen=True, slots=True)
class JwtRequest:
    audience: Sequence[str]
    ttl_seconds: int = 0
    spiffe_id: str = ""  # a workload a trusted node agent mints for; empty: the caller


@dataclass(frozen=True, slots=True)
class MintedSvid:
    token: str
    spiffe_id: str
    expires_at_unix: int


@dataclass(frozen=True, slots=True)
class Bundles:
    own: bytes  # this trust domain's SPIFFE bundle JSON (as GET /v1/bundle)
    federated: Mapping[str, bytes]


@dataclass(frozen=True, slots=True)
class JwtLifetimes:
    default: timedelta
    maximum: timedelta


class SvidService:
    def __init__(self, *, issuance: IssuanceService, keys: Callable[[], JwtKeySet],
                 authority: Callable[[], SigningAuthority], sequence: Callable[[], int],
                 refresh_hint_seconds: int, blocked: BlockedIdentities,
                 lifetimes: JwtLifetimes, clock: Clock,
                 rate_limits: IssuanceRateLimits | None = None,
                 federation: FederatedBundles | None = None) -> None:
        """`rate_limits`: issuance's (one budget per source and identity for certificates and
        tokens alike); refusals go to issuance's summary."""
        self._issuance = issuance
        self._keys = keys
        self._authority = authority
        self._sequence = sequence
        self._refresh_hint = refresh_hint_seconds
        self._blocked = blocked
        self._lifetimes = lifetimes
        self._clock = clock
        self._rate_limits = rate_limits or IssuanceRateLimits(None, None)
        self._federation = federation or NoFederation()

    async def mint(self, call: SvidCall, request: JwtRequest) -> MintedSvid:
        caller: Caller | None = None
        source = source_address(call.peer)
        try:
            self._rate_limits.check_source(source)  # before any token is looked at
            caller = await self._authenticate(call, request.spiffe_id, MINT)
            self._rate_limits.check_identity(caller.spiffe_id.uri)
            audience = jwt_signing.check_audience(request.audience)
            ttl = jwt_signing.token_lifetime(timedelta(seconds=request.ttl_seconds),
                                          self._lifetimes.default, self._lifetimes.maximum)
            if await self._blocked.is_blocked(caller.spiffe_id.uri):
                raise PermissionDenied("identity is blocked by an administrator")
            minted = await self._sign(caller.spiffe_id.uri, audience, ttl)
        except (AuthenticationError, PermissionDenied, RateLimited) as exc:
            self._refused(source, MINT, caller, exc)
            raise
        return MintedSvid(minted.token, caller.spiffe_id.uri, int(minted.expires_at.timestamp()))

    async def bundles(self, call: SvidCall) -> Bundles:
        """Any authenticated workload or agent may read them (they are public anyway, but the
        gRPC port serves only callers it knows)."""
        source = source_address(call.peer)
        try:
            self._rate_limits.check_source(source)
            await self._authenticate(call, "", BUNDLES)
        except (AuthenticationError, PermissionDenied, RateLimited) as exc:
            self._refused(source, BUNDLES, None, exc)
            raise
        own = spiffe_jwks(self._authority().bundle, self._sequence(), self._refresh_hint,
                          self._keys().published)
        federated = {td: b.document for td, b in self._federation.snapshot().items()}
        return Bundles(json.dumps(own).encode(), federated)

    async def _authenticate(self, call: SvidCall, spiffe_id: str, action: str) -> Caller:
        if not call.authorization:
            raise AuthenticationError(f"{action} needs a service-account token (a client "
                                      "certificate is not enough)", reason="missing")
        metadata = {IMPERSONATED_IDENTITY: spiffe_id} if spiffe_id else {}
        return await self._issuance.authenticate(CertificateRequest(
            csr_pem="", validity_seconds=0, metadata=metadata,
            authorization=call.authorization, cluster_id=call.cluster_id, peer=call.peer,
        ), action=action)

    async def _sign(self, subject: str, audience: Sequence[str], ttl: timedelta) -> MintedJwt:
        signing = self._keys().signing
        if signing is None:
            raise CaUnavailable("no JWT-SVID signing key is loaded yet")
        now = self._clock.now()
        try:
            if isinstance(signing.signer, LocalSigner):
                return jwt_signing.mint(signing, subject, audience, ttl, now)
            # A network call (Vault Transit): off the event loop.
            return await asyncio.to_thread(jwt_signing.mint, signing, subject, audience, ttl, now)
        except SignerUnavailable as exc:
            raise CaUnavailable("the JWT signing key's service (Vault) is unavailable") from exc
        except ValueError as exc:  # the loaded key expired: the rotator has not replaced it
            raise CaUnavailable(f"no usable JWT-SVID signing key: {exc}") from None

    def _refused(self, source: str, action: str, caller: Caller | None, exc: Exception) -> None:
        if isinstance(exc, AuthenticationError):
            code = exc.reason
        else:
            code = "rate_limited" if isinstance(exc, RateLimited) else "blocked"
        reason = f"over the per-{exc.limit} rate limit" if isinstance(exc, RateLimited) else str(exc)
        self._issuance.refusals.add(self._clock.now(), source=f"grpc:{source}", action=action,
                                    target=caller.spiffe_id.uri if caller else "",
                                    reason=reason, code=code)
