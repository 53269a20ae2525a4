"""Applying the rotation decisions (core/rotation.py) to the CA journal and the key store.

`run_due` asks `next_step` what is due, applies one action, re-reads the journal and asks
again, so a crash between two actions resumes exactly where it stopped. Keys are stored
before the row that names them is committed: a crash in between leaves an unused key file,
never a generation without its key. With a lease, every write is fenced by it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshca.core import rotation
from meshca.core.bundle import certificate_pem
from meshca.core.certificates import format_serial
from meshca.core.clock import Clock
from meshca.core.jwt_signing import new_kid
from meshca.core.keys import KeyType, SigningKey
from meshca.core.remote_signing import LocalSigner, Signer, sign_certificate
from meshca.core.rotation import Action, Activate, Kind, Prepare, Prune, RotationPolicy, State, Withdraw
from meshca.core.spiffe import SpiffeId
from meshca.core.templates import ca_certificate, ca_subject
from meshca.service.ca_ports import CaJournal, KeyBackend, Lease, NewGeneration
from meshca.service.ports import AuditEntry

log = logging.getLogger(__name__)
_BACKDATE = timedelta(minutes=5)
_MAX_ACTIONS = 20  # per call: a full bootstrap takes four


@dataclass(frozen=True, slots=True)
class LifecycleProfile:
    key_type: KeyType
    trust_domain: str
    organization: str
    root_ttl: timedelta
    intermediate_ttl: timedelta
    jwt_key_type: KeyType = KeyType.EC_P256  # --jwt-key-type; a JWT key lives intermediate_ttl


class CaLifecycle:
    def __init__(self, journal: CaJournal, keys: KeyBackend, profile: LifecycleProfile,
                 policy: RotationPolicy, clock: Clock) -> None:
        self._journal = journal
        self._keys = keys
        self._profile = profile
        self._policy = policy
        self._clock = clock

    def run_due(self, lease: Lease | None) -> list[Action]:
        """Apply every action due now, one transaction each; return what was done."""
        done: list[Action] = []
        for _ in range(_MAX_ACTIONS):
            generations, published = self._journal.snapshot()
            now = self._clock.now()
            due = rotation.next_step(self._policy, generations, now, published=published)
            if not due:
                return done
            created = self._apply(due[0], generations, lease)
            log.info("CA: %s", rotation.describe(due[0], created))
            done.append(due[0])
        raise RuntimeError("CA rotation did not settle; the journal may be inconsistent")

    def taint(self, generation_id: int, lease: Lease | None, *,
              audit: AuditEntry | None = None) -> None:
        """An operator says this key is compromised; the next `run_due` replaces it.
        `audit` is written in the same transaction."""
        self._journal.move(lease, self._clock.now(), generation_id, State.TAINTED, audit=audit)

    def apply(self, action: Action, lease: Lease | None, *,
              audit: AuditEntry | None = None) -> int | None:
        """One action an operator asked for (`rotation.manual_prepare` / `manual_activate`);
        for a Prepare, the new generation's id. `audit` is written in the same transaction."""
        generations, _ = self._journal.snapshot()
        created = self._apply(action, generations, lease, audit)
        log.info("CA: %s", rotation.describe(action, created, manual=True))
        return created

    def _apply(self, action: Action, generations: list[rotation.Generation],
               lease: Lease | None, audit: AuditEntry | None = None) -> int | None:
        now = self._clock.now()
        match action:
            case Prepare(kind=kind, parent_id=parent_id):
                number = 1 + sum(1 for g in generations if g.kind is kind)  # "root g3"
                return self._prepare(kind, parent_id, number, lease, audit)
            case Activate(generation_id=gid, retires=retires):
                self._journal.move(lease, now, gid, State.ACTIVE, retires=retires, audit=audit)
            case Withdraw(generation_id=gid):
                self._journal.move(lease, now, gid, State.RETIRED, audit=audit)
            case Prune(generation_id=gid):
                if audit is not None:
                    raise ValueError("a prune is never an operator's action")
                self._journal.prune(lease, now, gid)
        return None

    def _new_key(self, kind: Kind, name: str, key_type: KeyType,
                 ) -> tuple[Signer, SigningKey | None, str | None]:
        """(signer, local key or None, remote location or None). A key in Vault Transit is
        created there (and confirmed) before anything names it; a local key is stored (sealed)
        by the caller before the journal row that names it is committed."""
        if self._keys.creates_remotely(kind.value):
            remote = self._keys.remote
            assert remote is not None
            created = remote.create(name, key_type)
            return created, None, str(created.location)
        key = key_type.generate()
        return LocalSigner(key), key, None

    def _prepare_jwt(self, number: int, lease: Lease | None, audit: AuditEntry | None) -> int:
        """A JWT-SVID signing key: no certificate; the row keeps its kid (as serial) and its
        public key (PEM), and it lives as long as an intermediate."""
        now = self._clock.now()
        profile = self._profile
        kid = new_kid()
        name = f"jwt-{format_serial(x509.random_serial_number())}"
        own, key, location = self._new_key(Kind.JWT, name, profile.jwt_key_type)
        if location is None:
            assert key is not None
            location = self._keys.keys.put(name, key)
        backdate = min(_BACKDATE, profile.intermediate_ttl / 100)
        public_pem = own.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        return self._journal.add(lease, now, NewGeneration(
            kind=Kind.JWT, parent_id=None, subject=f"CN=JWT-SVID key g{number}", serial=kid,
            key_type=profile.jwt_key_type.value, key_location=location,
            not_before=now - backdate, not_after=now + profile.intermediate_ttl,
            certificate_pem=public_pem.decode("ascii"),
        ), audit=audit)

    def _prepare(self, kind: Kind, parent_id: int | None, number: int, lease: Lease | None,
                 audit: AuditEntry | None) -> int:
        if kind is Kind.JWT:
            return self._prepare_jwt(number, lease, audit)
        now = self._clock.now()
        profile = self._profile
        serial = x509.random_serial_number()
        name = f"{kind.value}-{format_serial(serial)}"
        own, key, location = self._new_key(kind, name, profile.key_type)
        public = own.public_key
        subject = ca_subject(profile.organization, kind.value, number, serial)
        trust_domain = SpiffeId.for_trust_domain(profile.trust_domain)
        # Backdated for clock skew, but never by a noticeable part of the lifetime: thresholds
        # are fractions of not_before..not_after, so a large backdate would make them due early.
        ttl = profile.root_ttl if parent_id is None else profile.intermediate_ttl
        backdate = min(_BACKDATE, ttl / 100)
        if parent_id is None:
            cert = sign_certificate(ca_certificate(
                public_key=public, subject=subject, trust_domain=trust_domain,
                issuer=None, serial=serial, not_before=now - backdate,
                not_after=now + profile.root_ttl, path_length=1,
            ), own)
        else:
            parent_cert, parent_signer = self._signing_parent(parent_id)
            cert = sign_certificate(ca_certificate(
                public_key=public, subject=subject, trust_domain=trust_domain,
                issuer=parent_cert, serial=serial, not_before=now - backdate,
                not_after=min(now + profile.intermediate_ttl, parent_cert.not_valid_after_utc),
                path_length=0,
            ), parent_signer)
            cert.verify_directly_issued_by(parent_cert)
        if location is None:
            assert key is not None
            location = self._keys.keys.put(name, key)
        return self._journal.add(lease, now, NewGeneration(
            kind=kind, parent_id=parent_id, subject=cert.subject.rfc4514_string(),
            serial=format_serial(serial), key_type=profile.key_type.value, key_location=location,
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            certificate_pem=certificate_pem(cert),
        ), audit=audit)

    def _signing_parent(self, parent_id: int) -> tuple[x509.Certificate, Signer]:
        row = self._journal.row(parent_id)
        return (x509.load_pem_x509_certificate(row.certificate_pem.encode()),
                self._keys.signer(row.key_location))
