"""The agent's ports, in its own words.

What the Workload API and SDS servicers need: attestation (who is behind a Unix connection)
and the SVID cache (what that identity holds now, and when it changes). What the SVID cache
needs: the meshca server that signs (`WorkloadSigner`) and the trust bundle it follows
(`BundleSource`). The agent's wiring (meshca/wiring/agent.py) plugs concrete ones in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from cryptography import x509

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
    """The roots of one trust domain, and how soon to ask again."""

    trust_domain: str
    roots: tuple[x509.Certificate, ...]
    refresh_hint: timedelta | None = None  # spiffe_refresh_hint, when the source gives one
    sequence: int | None = None  # spiffe_sequence, when the source gives one


class BundleSource(Protocol):
    async def fetch(self) -> TrustBundle:
        """The trust domain's current roots. Raises `meshca.errors.Unavailable` when it
        cannot answer now."""
        ...
