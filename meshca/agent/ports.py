"""The agent's ports, in its own words.

What the Workload API and SDS servicers need: attestation (who is behind a Unix connection),
the SVID cache (what that identity holds now, and when it changes) and, for the JWT half,
JWT-SVIDs and the JWT bundles (`JwtSvids`). What the caches need: the meshca server that signs
(`WorkloadSigner`) and mints (`JwtMinter`), and the trust bundles it follows (`BundleSource`:
the own trust domain's and the federated ones'). The agent's wiring (meshca/wiring/agent.py)
plugs concrete ones in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509

from meshca.core.jwt_svid import JwtPublicKey
from meshca.core.spiffe import SpiffeId


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The caller's process as the kernel reported it for the connection (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Identity:
    """What an attested caller is entitled to."""

    spiffe_id: SpiffeId


@dataclass(frozen=True, slots=True)
class X509Svid:
    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]  # the leaf first, then its intermediates
    private_key: bytes  # unencrypted PKCS#8 DER; never leaves the node
    hint: str = ""


@dataclass(frozen=True, slots=True)
class X509State:
    """Everything an identity's X.509 stream shows at one moment."""

    svids: tuple[X509Svid, ...]
    # Roots by trust domain name ("cluster.local"): the SVIDs' own domain and federated ones.
    bundles: Mapping[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)
    crls: tuple[bytes, ...] = ()  # DER


class WorkloadIdentities(Protocol):
    async def attest(self, peer: PeerCredentials) -> Identity | None:
        """The identity of the process behind `peer`, or None when it has none. Raises
        `meshca.errors.PermissionDenied` when the caller cannot be attested (a process that
        exited, an unknown pod) and `meshca.errors.Unavailable` when a source it needs is down."""
        ...


class X509Svids(Protocol):
    def watch(self, identity: Identity) -> AsyncIterator[X509State]:
        """The identity's current state at once, then again after every change (renewal,
        bundle change), until the caller stops iterating. Raises `meshca.errors.Unavailable`
        when there is nothing valid to serve, `meshca.errors.PermissionDenied` when the server
        refuses to sign for the identity."""
        ...


class WorkloadSigner(Protocol):
    """The meshca server's CreateCertificate, called with the agent's own token and
    `ImpersonatedIdentity` naming the workload."""

    async def sign(self, spiffe_id: SpiffeId, csr_pem: str,
                   ttl: timedelta | None = None) -> tuple[x509.Certificate, ...]:
        """The chain the server returned: leaf first, then intermediates, the root last.
        Raises `meshca.errors.Unavailable` when the server cannot answer now (down, overloaded,
        rate-limited: worth retrying) and `meshca.errors.PermissionDenied` when it refuses the
        agent or the identity (not worth retrying soon)."""
        ...


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """The roots (and JWT-SVID keys) of one trust domain, and how soon to ask again."""

    trust_domain: str
    roots: tuple[x509.Certificate, ...]
    refresh_hint: timedelta | None = None  # spiffe_refresh_hint, when the source gives one
    sequence: int | None = None  # spiffe_sequence, when the source gives one
    jwt_keys: Mapping[str, JwtPublicKey] = field(default_factory=dict)  # by kid
    # The bundles of the trust domains this one federates with, by name, as the source gave
    # them (their own `federated` empty). Never mixed into `roots` or `jwt_keys`.
    federated: Mapping[str, TrustBundle] = field(default_factory=dict)


class BundleSource(Protocol):
    async def fetch(self) -> TrustBundle:
        """The trust domain's current roots. Raises `meshca.errors.Unavailable` when it
        cannot answer now."""
        ...


@dataclass(frozen=True, slots=True)
class JwtSvid:
    token: str  # compact JWS; a bearer credential: never logged
    spiffe_id: SpiffeId
    expiry: datetime
    claims: Mapping[str, Any] = field(default_factory=dict)
    hint: str = ""


class JwtMinter(Protocol):
    """The meshca server's MintJWTSVID, called with the agent's own token for a workload."""

    async def mint(self, spiffe_id: SpiffeId, audience: tuple[str, ...],
                   ttl: timedelta | None = None) -> JwtSvid:
        """A JWT-SVID for `spiffe_id` with `aud` = `audience`. Raises `Unavailable` (worth
        retrying) and `PermissionDenied` (the server refuses), as `WorkloadSigner.sign`."""
        ...


@dataclass(frozen=True, slots=True)
class JwtBundleSet:
    """JWT-SVID keys by trust domain name, then by kid: the own trust domain's and the
    federated ones'."""

    keys: Mapping[str, Mapping[str, JwtPublicKey]] = field(default_factory=dict)


class JwtBundles(Protocol):
    def jwt_bundles(self) -> JwtBundleSet:
        """The JWT bundles held now."""
        ...

    def watch_jwt_bundles(self) -> AsyncIterator[JwtBundleSet]:
        """The JWT bundles at once, then again after every change, until the caller stops."""
        ...


class JwtSvids(JwtBundles, Protocol):
    async def fetch(self, identity: Identity, audience: tuple[str, ...]) -> JwtSvid:
        """A JWT-SVID of `identity` for `audience` (non-empty). Raises `Unavailable` and
        `PermissionDenied` as `X509Svids.watch`."""
        ...
