"""What the Workload API servicer needs from the rest of the agent, in its own words.

Attestation (who is behind a Unix connection) and the SVID cache (what that identity holds
now, and when it changes) are separate ports: the kubernetes and unix attestors, and the cache
that talks to the server, are built later and plugged in by the agent's wiring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
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
        when there is nothing valid to serve."""
        ...
