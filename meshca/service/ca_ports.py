"""The CA side's ports: the journal, leases, the CA state read by metrics, the key backend,
a plugged-in CA's files and the stored authorization policies; with the values they carry.

infra/ implements them (infra/db, infra/cacerts, wiring/keystore), tests/fakes/ fakes them.
Every adapter raises the tree's errors: `StoreUnavailable` when the database cannot answer,
`LostLease` when a fenced write finds the lease gone, `NotFound` for an unknown generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from meshca.core.authority import SigningAuthority
from meshca.core.bundle import TrustBundle
from meshca.core.keys import KeyType, SigningKey
from meshca.core.remote_signing import Signer
from meshca.core.rotation import Generation, Kind, State
from meshca.service.ports import AuditEntry, KeyStore

# Rows of a plugged-in CA (--ca-dir): recorded so issued certificates can name their issuer,
# never part of rotation; meshca holds no key for them.
PLUGGED = "plugged"
# The private key's file in Istio's cacerts layout (see infra/cacerts/).
CA_KEY = "ca-key.pem"


# ---- values --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease: `fencing` grows whenever the lease changes hands."""

    name: str
    holder: str
    fencing: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CaGeneration:
    """One row of the CA journal: a root, an intermediate, or a plugged-in signing CA."""

    id: int
    kind: str  # "root" | "intermediate" | PLUGGED
    parent_id: int | None
    subject: str
    serial: str
    key_type: str
    key_location: str
    not_before: datetime
    not_after: datetime
    state: str
    certificate_pem: str


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """What `CaJournal.add` records for a prepared generation."""

    kind: Kind
    parent_id: int | None
    subject: str
    serial: str
    key_type: str
    key_location: str
    not_before: datetime
    not_after: datetime
    certificate_pem: str


@dataclass(frozen=True, slots=True)
class PluggedCa:
    """A verified plugged-in CA (`--ca-dir`).

    `chain` holds the certificates strictly between the signing certificate and the root that
    anchors it (roots excluded, as `SigningAuthority.chain` wants); `anchor` is that root;
    `roots` is the whole trust bundle. `not_after` is the earliest expiry on the path
    signing cert → anchor. `fingerprint` is a SHA-256 over the four files' bytes.
    """

    directory: Path
    certificate: x509.Certificate
    private_key: SigningKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    anchor: x509.Certificate
    fingerprint: str
    not_after: datetime
    expires_soon: bool
    warnings: tuple[str, ...]

    @property
    def key_file(self) -> Path:
        return self.directory / CA_KEY

    def authority(self, generation_id: int) -> SigningAuthority:
        return SigningAuthority(
            generation_id=generation_id,
            certificate=self.certificate,
            private_key=self.private_key,
            chain=self.chain,
            bundle=TrustBundle(self.roots),
        )


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """An authorization policy stored through the admin API."""

    namespace: str
    name: str
    version: int
    document: dict[str, Any]
    updated_by: str
    updated_at: datetime


# ---- ports ---------------------------------------------------------------------------------

class Leases(Protocol):
    """At most one holder per name; times come from the caller's clock."""

    def acquire(self, name: str, holder: str, ttl: timedelta, now: datetime) -> Lease | None:
        """Take or renew the lease; None while someone else holds it unexpired."""
        ...

    def release(self, lease: Lease) -> None:
        """Give it up early, if still ours."""
        ...

    def current(self, name: str) -> Lease | None: ...


class CaJournal(Protocol):
    """Every CA generation and its state. Each change is one transaction; with a lease, the
    transaction first checks it is still held and raises LostLease if not. With an `audit`
    entry, the entry is written in that same transaction."""

    def snapshot(self) -> tuple[list[Generation], set[int]]:
        """Every meshca generation (plugged rows left out), and the published roots' ids."""
        ...

    def add(self, lease: Lease | None, now: datetime, generation: NewGeneration, *,
            audit: AuditEntry | None = None) -> int:
        """A new generation, prepared; a root enters the bundle with it. Its id."""
        ...

    def move(self, lease: Lease | None, now: datetime, generation_id: int, target: State, *,
             retires: int | None = None, audit: AuditEntry | None = None) -> None:
        """One legal state transition (and the retirement it implies), atomically.
        NotFound for an unknown generation, ValueError for an illegal move."""
        ...

    def prune(self, lease: Lease | None, now: datetime, generation_id: int) -> None:
        """A retired root leaves the bundle."""
        ...

    def version(self) -> tuple[int, tuple[tuple[int, str, bool], ...]]:
        """Cheap to poll; changes whenever the signing generation or the bundle may have.
        The first element is the bundle's spiffe_sequence."""
        ...

    def register_plugged(self, *, certificate_pem: str, serial: str, subject: str,
                         key_type: str, location: str, not_before: datetime,
                         not_after: datetime, now: datetime) -> int:
        """The plugged-in signing certificate as a row, once; earlier plugged rows retire."""
        ...

    def bump_sequence(self, now: datetime) -> None:
        """The published roots changed outside the journal (a plugged-in CA was reloaded)."""
        ...

    def row(self, generation_id: int) -> CaGeneration:
        """NotFound for an unknown id."""
        ...

    def record_alone(self, entry: AuditEntry) -> None:
        """An audit entry with no change to share a transaction with (a refusal)."""
        ...


class CaState(Protocol):
    """What metrics and status pages read of the CA: every row, and the bundle sequence."""

    def all(self) -> list[CaGeneration]: ...

    def bundle_sequence(self) -> int: ...


class RemoteKey(Signer, Protocol):
    @property
    def location(self) -> object:
        """Printable as the key location kept in the CA journal."""
        ...


class RemoteKeys(Protocol):
    """Keys created and used inside a signing service; the private half never reaches meshca."""

    def create(self, name: str, key_type: KeyType) -> RemoteKey: ...

    def signer(self, location: str) -> Signer: ...


class KeyServiceHealth(Protocol):
    """Whether the key service (Vault) answers; fed by its keeper."""

    @property
    def ready(self) -> bool: ...

    @property
    def alert(self) -> float:
        """1.0 while the key service has failed for a while or a due rotation waits for it."""
        ...

    def rotation_waiting(self, waiting: bool) -> None: ...


class KeyBackend(Protocol):
    """Where CA keys are created, kept and opened (`--keystore`)."""

    @property
    def keys(self) -> KeyStore:
        """Where new keys meshca generates go: sealed files, or Vault KV."""
        ...

    @property
    def remote(self) -> RemoteKeys | None:
        """Keys created inside Vault Transit (vault-transit only)."""
        ...

    @property
    def health(self) -> KeyServiceHealth | None: ...

    def creates_remotely(self, kind: str) -> bool: ...

    def signer(self, location: str) -> Signer:
        """The signer for a journal row's key, wherever the key lives."""
        ...


@dataclass(frozen=True, slots=True)
class UpstreamRoot:
    """The upstream authority's current signing CA: a root meshca records (never a key)."""

    location: str  # kept as the root generation's key_location, e.g. vault-pki:pki/issuer/<id>
    certificate: x509.Certificate


class UpstreamAuthority(Protocol):
    """An organisation's CA above meshca (`--upstream vault-pki`): it signs meshca's
    intermediates from their CSRs; its roots are meshca's bundle.

    Raises `SignerUnavailable` while it cannot be reached (rotation waits and the alert is
    raised; issuance goes on), another `DependencyError` when it refuses.
    """

    def current_root(self) -> UpstreamRoot:
        """The CA it signs with now (Vault PKI: the mount's default issuer)."""
        ...

    def sign_intermediate_under(self, root_location: str, csr: x509.CertificateSigningRequest, *,
                                ttl: timedelta, uri_sans: list[str]) -> x509.Certificate:
        """The CSR signed by the root at `root_location`: a CA certificate carrying the CSR's
        key and URI SANs, checked to verify under that root before it is returned."""
        ...


class PluggedCaFiles(Protocol):
    """An operator's CA directory, watched: `poll` swaps in a new CA only when it verifies."""

    @property
    def directory(self) -> Path: ...

    @property
    def current(self) -> PluggedCa | None: ...

    @property
    def last_error(self) -> str | None: ...

    def poll(self, now: datetime) -> PluggedCa | None: ...


class StoredPolicies(Protocol):
    """The policies stored through the admin API, with a version that grows on each change."""

    def version(self) -> int: ...

    def all(self) -> tuple[int, list[StoredPolicy]]:
        """The set version and every policy, read together."""
        ...
