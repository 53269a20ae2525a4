"""Applying the rotation decisions (core/rotation.py) to the CA journal and the key store.

`run_due` asks `next_step` what is due, applies one action, re-reads the journal and asks
again, so a crash between two actions resumes exactly where it stopped. Keys are stored
before the row that names them is committed: a crash in between leaves an unused key file,
never a generation without its key. With a lease, every write is fenced by it.

With an upstream authority (`--upstream vault-pki`) the roots are the upstream's: a root is
recorded (certificate only, no key) when the upstream signs with one the journal does not
have yet, published at once, and activated once it has been in the bundle `publish_lead`;
each intermediate's key is still meshca's, and the upstream signs its CSR.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshca.core import cross_sign, rotation
from meshca.core.bundle import certificate_pem
from meshca.core.certificates import format_serial
from meshca.core.clock import Clock
from meshca.core.jwt_signing import new_kid
from meshca.core.keys import KeyType, SigningKey
from meshca.core.remote_signing import LocalSigner, Signer, SignerUnavailable, sign_certificate, sign_csr
from meshca.core.rotation import Action, Activate, Kind, Prepare, Prune, RotationPolicy, State, Withdraw
from meshca.core.spiffe import SpiffeId
from meshca.core.templates import ca_certificate, ca_subject
from meshca.errors import Conflict
from meshca.service.ca_ports import CaJournal, KeyBackend, Lease, NewGeneration, UpstreamAuthority
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
    cross_sign: bool = False  # --root-rotation cross-sign (core/cross_sign.py)


class CaLifecycle:
    def __init__(self, journal: CaJournal, keys: KeyBackend, profile: LifecycleProfile,
                 policy: RotationPolicy, clock: Clock,
                 upstream: UpstreamAuthority | None = None) -> None:
        self._journal = journal
        self._keys = keys
        self._profile = profile
        self._policy = policy
        self._clock = clock
        self._upstream = upstream
        self.upstream_error: str | None = None  # the last failure to reach the upstream

    def run_due(self, lease: Lease | None) -> list[Action]:
        """Apply every action due now, one transaction each; return what was done.

        With an upstream, first follow it (record its new root, activate it when due). When it
        cannot be reached, what is due is still tried (withdrawals and prunes need no
        upstream), then its `SignerUnavailable` is raised: the rotator waits and raises the
        alert, and the active generations keep signing."""
        done: list[Action] = []
        unreachable: SignerUnavailable | None = None
        if self._upstream is not None:
            try:
                done += self._follow_upstream(lease)
                self.upstream_error = None
            except SignerUnavailable as exc:
                self.upstream_error = str(exc)
                unreachable = exc
        done += self._run_steps(lease)
        if unreachable is not None:
            raise unreachable
        return done

    def _run_steps(self, lease: Lease | None) -> list[Action]:
        done: list[Action] = []
        for _ in range(_MAX_ACTIONS):
            generations, published = self._journal.snapshot()
            now = self._clock.now()
            due = rotation.next_step(self._policy, generations, now, published=published,
                                     external_roots=self.external_roots)
            if not due:
                return done
            created = self._apply(due[0], generations, lease)
            log.info("CA: %s", rotation.describe(due[0], created))
            done.append(due[0])
        raise RuntimeError("CA rotation did not settle; the journal may be inconsistent")

    @property
    def external_roots(self) -> bool:
        """Whether the roots are an upstream's (`rotation.next_step`'s `external_roots`)."""
        return self._upstream is not None

    def _follow_upstream(self, lease: Lease | None) -> list[Action]:
        """Record the upstream's current root when the journal does not have it: it is
        published at once, and replaces the active root once published `publish_lead`."""
        assert self._upstream is not None
        current = self._upstream.current_root()
        generations, _ = self._journal.snapshot()
        roots = [self._journal.row(g.id) for g in generations if g.kind is Kind.ROOT]
        if any(row.key_location == current.location for row in roots):
            return []
        self._record_upstream_root(current.certificate, current.location, 1 + len(roots), lease)
        log.info("CA rotation: recorded the upstream's new root %s", current.location)
        return [Prepare(Kind.ROOT, None, rotation.Reason.SCHEDULED)]

    def _record_upstream_root(self, certificate: x509.Certificate, location: str, number: int,
                              lease: Lease | None, audit: AuditEntry | None = None) -> int:
        public = certificate.public_key()
        key_type = _key_type_of(public)
        return self._journal.add(lease, self._clock.now(), NewGeneration(
            kind=Kind.ROOT, parent_id=None, subject=certificate.subject.rfc4514_string(),
            serial=format_serial(certificate.serial_number), key_type=key_type,
            key_location=location, not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc, certificate_pem=certificate_pem(certificate),
        ), audit=audit)

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
        if self._upstream is not None:
            return self._prepare_under_upstream(kind, parent_id, number, lease, audit)
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
        stored_pem = ""  # beyond the certificate: a root's cross certificate
        if parent_id is None:
            cert = sign_certificate(ca_certificate(
                public_key=public, subject=subject, trust_domain=trust_domain,
                issuer=None, serial=serial, not_before=now - backdate,
                not_after=now + profile.root_ttl,
                path_length=cross_sign.ROOT_PATH_LENGTH if profile.cross_sign else 1,
            ), own)
            if profile.cross_sign:
                cross = self._cross_certificate(cert, now)
                stored_pem = certificate_pem(cross) if cross is not None else ""
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
            certificate_pem=certificate_pem(cert) + stored_pem,
        ), audit=audit)

    def _cross_certificate(self, new_root: x509.Certificate, now: datetime) -> x509.Certificate | None:
        """The active root's signature on the new root's key and name, kept after the new
        root's certificate in its row; None when there is no active root to sign it (at
        bootstrap) or its path length leaves no room (a root made before this mode)."""
        generations, _ = self._journal.snapshot()
        active = next((g for g in generations if g.kind is Kind.ROOT and g.state is State.ACTIVE), None)
        if active is None or now >= active.not_after:
            return None
        old_cert, old_signer = self._signing_parent(active.id)
        if not cross_sign.can_cross_sign(old_cert):
            log.warning("root generation %s has path length 1: its successor is not cross-signed "
                        "(roots made with --root-rotation cross-sign have 2)", active.id)
            return None
        cross = sign_certificate(cross_sign.cross_certificate(
            new_root, old_cert, trust_domain=SpiffeId.for_trust_domain(self._profile.trust_domain),
            serial=x509.random_serial_number(), now=now,
            backdate=min(_BACKDATE, self._profile.root_ttl / 100)), old_signer)
        cross.verify_directly_issued_by(old_cert)
        return cross

    def _prepare_under_upstream(self, kind: Kind, parent_id: int | None, number: int,
                                lease: Lease | None, audit: AuditEntry | None) -> int:
        assert self._upstream is not None
        if parent_id is None:  # an operator's `ca:prepare root`: whatever the upstream has now
            current = self._upstream.current_root()
            generations, _ = self._journal.snapshot()
            if any(self._journal.row(g.id).key_location == current.location
                   for g in generations if g.kind is Kind.ROOT):
                raise Conflict(f"the upstream still signs with {current.location}, which the "
                               "journal has: rotate the upstream's issuer first")
            return self._record_upstream_root(current.certificate, current.location, number,
                                              lease, audit)
        now = self._clock.now()
        profile = self._profile
        serial = x509.random_serial_number()
        name = f"{kind.value}-{format_serial(serial)}"
        own, key, location = self._new_key(kind, name, profile.key_type)
        parent = self._journal.row(parent_id)
        parent_cert = x509.load_pem_x509_certificate(parent.certificate_pem.encode())
        trust_domain = str(SpiffeId.for_trust_domain(profile.trust_domain))
        csr = sign_csr(x509.CertificateSigningRequestBuilder()
                       .subject_name(ca_subject(profile.organization, kind.value, number, serial))
                       .add_extension(x509.SubjectAlternativeName(
                           [x509.UniformResourceIdentifier(trust_domain)]), critical=False), own)
        # The upstream refuses a certificate outliving its root: ask for no more than is left.
        ttl = min(profile.intermediate_ttl, parent_cert.not_valid_after_utc - now)
        cert = self._upstream.sign_intermediate_under(parent.key_location, csr, ttl=ttl,
                                                      uri_sans=[trust_domain])
        cert.verify_directly_issued_by(parent_cert)
        if cert.public_key() != own.public_key:
            raise ValueError("the upstream signed another key than the intermediate's")
        if location is None:
            assert key is not None
            location = self._keys.keys.put(name, key)
        return self._journal.add(lease, now, NewGeneration(
            kind=kind, parent_id=parent_id, subject=cert.subject.rfc4514_string(),
            serial=format_serial(cert.serial_number), key_type=profile.key_type.value,
            key_location=location, not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc, certificate_pem=certificate_pem(cert),
        ), audit=audit)

    def _signing_parent(self, parent_id: int) -> tuple[x509.Certificate, Signer]:
        row = self._journal.row(parent_id)
        return (x509.load_pem_x509_certificate(row.certificate_pem.encode()),
                self._keys.signer(row.key_location))


def _key_type_of(public: object) -> str:
    """The journal's key_type for an upstream root's key (any size: it is not meshca's)."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"ec-p{public.curve.key_size}"
    if isinstance(public, rsa.RSAPublicKey):
        return f"rsa-{public.key_size}"
    return type(public).__name__.lower()[:16]
