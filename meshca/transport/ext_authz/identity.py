"""Is the calling workload's identity still good? Blocked SPIFFE IDs, revoked certificates and
certificates under a compromised CA key are denied at ext_authz too, not only at issuance.

A check never waits for the database: it reads the last snapshot the refresher (refresher.py)
took. What it cannot check it denies: a snapshot older than the staleness limit (or none yet),
and a `source.certificate` that is not a certificate.
"""

from __future__ import annotations

import functools
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from meshca.core.certificates import format_serial
from meshca.transport.ext_authz import reasons

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # a code from reasons.py
    detail: str  # human words, for the log (and verbose deny bodies)


@dataclass(frozen=True, slots=True)
class IdentityState:
    """One snapshot of what may no longer authenticate."""

    blocked: frozenset[str]  # SPIFFE IDs, as Envoy sends `source.principal`
    revoked: frozenset[str]  # certificate serials, lower-case hex
    tainted_key_ids: frozenset[bytes]  # subject key ids of untrusted CA generations
    tainted_subjects: frozenset[bytes]  # their subjects (DER), for leaves without an AKI
    taken_at: float  # monotonic time the read began: the state is at least this fresh


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    serial: str
    issuer: bytes  # DER of the issuer name
    authority_key_id: bytes | None


class IdentityCheck(Protocol):
    def refusal(self, principal: str | None, certificate: str) -> Refusal | None:
        """Why this caller is refused, or None (called from the server's threads)."""


class NoIdentityCheck:
    def refusal(self, principal: str | None, certificate: str) -> Refusal | None:
        return None


class SnapshotIdentityCheck:
    """Decides from `snapshot()` (the refresher's current state) while it is at most
    `max_staleness` seconds old."""

    def __init__(self, snapshot: Callable[[], IdentityState | None], max_staleness: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._snapshot = snapshot
        self._max_staleness = max_staleness
        self._clock = clock
        self._stale = False  # for logging the change only; a lost race logs it twice

    def refusal(self, principal: str | None, certificate: str) -> Refusal | None:
        state = self._snapshot()
        age = float("inf") if state is None else self._clock() - state.taken_at
        if state is None or age > self._max_staleness:
            return self._stale_refusal(age)
        if self._stale:
            self._stale = False
            log.info("ext_authz: the identity state is fresh again (%.1fs old)", age)
        if principal and principal in state.blocked:
            return Refusal(reasons.BLOCKED, f"source identity {principal} is blocked")
        if not certificate:  # Envoy sends it only with `include_peer_certificate`
            return None
        peer = peer_certificate(certificate)
        if peer is None:
            return Refusal(reasons.CERTIFICATE_UNPARSEABLE,
                           "source.certificate is not a URL-encoded PEM certificate")
        if peer.serial in state.revoked:
            return Refusal(reasons.REVOKED, f"source certificate {peer.serial} is revoked")
        if (peer.authority_key_id in state.tainted_key_ids if peer.authority_key_id is not None
                else peer.issuer in state.tainted_subjects):
            return Refusal(reasons.TAINTED_ISSUER, f"source certificate {peer.serial} was issued "
                                                   "under a CA key marked compromised")
        return None

    def _stale_refusal(self, age: float) -> Refusal:
        detail = ("no identity state has been read yet" if age == float("inf") else
                  f"the identity state is {age:.1f}s old (limit {self._max_staleness:g}s)")
        if not self._stale:
            self._stale = True
            log.warning("ext_authz: %s: denying every check until the blocked identities and "
                        "revoked certificates are read again", detail)
        return Refusal(reasons.IDENTITY_STATE_STALE, detail)


@functools.lru_cache(maxsize=4096)  # a workload sends the same certificate until it renews
def peer_certificate(text: str) -> PeerCertificate | None:
    """Envoy sends the peer certificate URL-encoded PEM; None when it is not one."""
    try:
        cert = x509.load_pem_x509_certificate(urllib.parse.unquote(text).encode())
        try:
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            key_id = aki.key_identifier
        except x509.ExtensionNotFound:
            key_id = None
        return PeerCertificate(format_serial(cert.serial_number), cert.issuer.public_bytes(), key_id)
    except Exception:  # noqa: BLE001 - whatever the parser trips over: unparseable, denied
        return None


def state_from(blocked: frozenset[str], revoked: frozenset[str], tainted_issuers: tuple[str, ...],
               taken_at: float) -> IdentityState:
    key_ids, subjects = set(), set()
    for pem in tainted_issuers:
        cert = _ca_certificate(pem)
        subjects.add(cert.subject.public_bytes())
        try:
            key_ids.add(cert.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier).value.digest)
        except x509.ExtensionNotFound:
            key_ids.add(x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest)
    return IdentityState(blocked, revoked, frozenset(key_ids), frozenset(subjects), taken_at)


@functools.lru_cache(maxsize=256)
def _ca_certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())
