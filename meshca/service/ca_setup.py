"""Bring up the signing CA: reuse what the database knows, or create a root and intermediate.

Keys are written to the key store before their rows are committed, so a crash in between
leaves an orphan key file, never a generation whose key is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509

from meshca.core.authority import SigningAuthority
from meshca.core.bundle import TrustBundle, certificate_pem
from meshca.core.clock import Clock
from meshca.core.keys import KeyType, SigningKey, signature_hash
from meshca.core.spiffe import SpiffeId
from meshca.core.templates import ca_certificate, ca_subject
from meshca.infra.db.ca_repository import CaGeneration, SqlCaRepository
from meshca.service.ports import KeyStore

log = logging.getLogger(__name__)
_BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CaProfile:
    key_type: KeyType
    trust_domain: str
    organization: str
    root_ttl: timedelta
    intermediate_ttl: timedelta
    # Replace the intermediate at start-up when less than this is left (>= the max leaf TTL).
    intermediate_min_remaining: timedelta


def ensure_signing_authority(
    repo: SqlCaRepository, keys: KeyStore, profile: CaProfile, clock: Clock
) -> SigningAuthority:
    now = clock.now()
    root = repo.active("root")
    if root is None or root.not_after - now < profile.intermediate_min_remaining:
        if root is not None:
            log.warning("root generation %d is about to expire; creating a new root", root.id)
        root = _create(repo, keys, profile, clock, kind="root", parent=None)
    root_key = keys.load(root.key_location)
    intermediate = repo.active("intermediate")
    if (
        intermediate is None
        or intermediate.parent_id != root.id
        or intermediate.not_after - now < profile.intermediate_min_remaining
    ):
        if intermediate is not None:
            repo.set_state(intermediate.id, "retired")
            log.info("retired intermediate generation %d", intermediate.id)
        intermediate = _create(
            repo, keys, profile, clock, kind="intermediate", parent=(root, root_key)
        )
    return load_signing_authority(repo, keys)


def load_signing_authority(repo: SqlCaRepository, keys: KeyStore) -> SigningAuthority:
    """The active intermediate and bundle as the database has them; never creates anything."""
    intermediate = repo.active("intermediate")
    if intermediate is None:
        raise RuntimeError("no active intermediate CA generation in the database")
    bundle = TrustBundle(tuple(x509.load_pem_x509_certificate(g.certificate_pem.encode())
                               for g in repo.in_bundle()))
    return SigningAuthority(
        generation_id=intermediate.id,
        certificate=x509.load_pem_x509_certificate(intermediate.certificate_pem.encode()),
        private_key=keys.load(intermediate.key_location),
        chain=(),
        bundle=bundle,
    )


def _create(
    repo: SqlCaRepository,
    keys: KeyStore,
    profile: CaProfile,
    clock: Clock,
    *,
    kind: str,
    parent: tuple[CaGeneration, SigningKey] | None,
) -> CaGeneration:
    now = clock.now()
    key = profile.key_type.generate()
    serial = x509.random_serial_number()
    subject = ca_subject(profile.organization, kind, repo.count(kind) + 1, serial)
    td = SpiffeId.for_trust_domain(profile.trust_domain)
    if parent is None:
        builder = ca_certificate(
            public_key=key.public_key(), subject=subject, trust_domain=td, issuer=None,
            serial=serial, not_before=now - _BACKDATE, not_after=now + profile.root_ttl,
            path_length=1,
        )
        cert = builder.sign(key, signature_hash(key))
        parent_id = None
    else:
        parent_gen, parent_key = parent
        parent_cert = x509.load_pem_x509_certificate(parent_gen.certificate_pem.encode())
        not_after = min(now + profile.intermediate_ttl, parent_cert.not_valid_after_utc)
        builder = ca_certificate(
            public_key=key.public_key(), subject=subject, trust_domain=td, issuer=parent_cert,
            serial=serial, not_before=now - _BACKDATE, not_after=not_after, path_length=0,
        )
        cert = builder.sign(parent_key, signature_hash(parent_key))
        cert.verify_directly_issued_by(parent_cert)
        parent_id = parent_gen.id
    location = keys.put(f"{kind}-{serial:x}", key)
    generation_id = repo.add(
        kind=kind, parent_id=parent_id, subject=cert.subject.rfc4514_string(), serial=f"{serial:x}",
        key_type=KeyType.of(key).value, key_location=location,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc, state="active",
        certificate_pem=certificate_pem(cert), created_at=now,
    )
    log.info("created %s CA generation %d (%s, %s)", kind, generation_id,
             cert.subject.rfc4514_string(), KeyType.of(key).value)
    created = repo.active(kind)
    assert created is not None and created.id == generation_id
    return created
