"""Bring up the signing CA from the journal: bootstrap or rotate what is due, then load.

The decisions are the rotation module's; `CaLifecycle` applies them. One replica at a time
does so, under the `ca-rotator` lease; the others wait until a signing generation exists.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from meshca.core import rotation
from meshca.core.authority import SigningAuthority
from meshca.core.bundle import TrustBundle
from meshca.core.clock import Clock
from meshca.core.cross_sign import served_cross_certificates
from meshca.core.jwt_signing import JwtKey, JwtKeySet, JwtSigningKey
from meshca.core.remote_signing import LocalSigner, SignerUnavailable, SigningPublicKey
from meshca.core.rotation import Kind, State
from meshca.errors import CaUnavailable
from meshca.service.ca_lifecycle import CaLifecycle
from meshca.service.ca_ports import CaJournal, KeyBackend, Leases

log = logging.getLogger(__name__)
ROTATOR_LEASE = "ca-rotator"
_LEASE_TTL = timedelta(seconds=60)
_WAIT_SECONDS = 60.0


def bring_up(lifecycle: CaLifecycle, journal: CaJournal, leases: Leases, keys: KeyBackend,
             clock: Clock, *, identity: str) -> SigningAuthority:
    """Apply what is due (under the lease, when this replica can get it), then load.

    While the key service (Vault) cannot be reached, a CA that exists is served as it is and
    its rotation waits; with no CA yet, start-up waits for Vault, retrying with backoff.
    """
    deadline = time.monotonic() + _WAIT_SECONDS
    delay = 0.5
    while True:
        keys_unavailable = False
        lease = leases.acquire(ROTATOR_LEASE, identity, _LEASE_TTL, clock.now())
        if lease is not None:
            try:
                lifecycle.run_due(lease)  # which logs each step
            except SignerUnavailable as exc:
                log.warning("CA rotation waits for the key service: %s", exc)
                keys_unavailable = True
            finally:
                leases.release(lease)
        try:
            return load_signing_authority(journal, keys)
        except SignerUnavailable as exc:
            log.warning("the signing key's service is unavailable: %s", exc)
            keys_unavailable = True
        except CaUnavailable:
            if not keys_unavailable and time.monotonic() > deadline:
                raise
        # Another replica holds the lease and is bootstrapping, or Vault is away.
        time.sleep(delay)
        delay = min(delay * 2, 30.0) if keys_unavailable else 0.5


def load_signing_authority(journal: CaJournal, keys: KeyBackend) -> SigningAuthority:
    """The one generation allowed to sign, and the published roots; never changes anything."""
    generations, published = journal.snapshot()
    signing = rotation.signing_generation(generations)
    if signing is None:
        raise CaUnavailable("no signing CA generation yet")
    intermediate = journal.row(signing.id)
    root_ids = {g.id for g in generations if g.kind is Kind.ROOT} & published
    roots = tuple(x509.load_pem_x509_certificate(journal.row(root_id).certificate_pem.encode())
                  for root_id in sorted(root_ids))
    signer = keys.signer(intermediate.key_location)
    local = signer.private_key if isinstance(signer, LocalSigner) else None
    # A root made by a cross-signed rotation keeps its cross certificate after its own: served
    # above the intermediate unless the root that signed it was tainted.
    parent = journal.row(signing.parent_id) if signing.parent_id is not None else None
    stored = x509.load_pem_x509_certificates(parent.certificate_pem.encode())[1:] if parent else []
    issuers = [x509.load_pem_x509_certificate(journal.row(g.id).certificate_pem.encode())
               for g in generations if g.kind is Kind.ROOT and g.state is not State.TAINTED] \
        if stored else []
    return SigningAuthority(
        generation_id=intermediate.id,
        certificate=x509.load_pem_x509_certificate(intermediate.certificate_pem.encode()),
        private_key=local,
        signer=None if local is not None else signer,
        chain=served_cross_certificates(stored, issuers),
        bundle=TrustBundle(roots),
    )


def load_jwt_keys(journal: CaJournal, keys: KeyBackend) -> JwtKeySet:
    """The active JWT-SVID key with its signer, and every JWT key published in the bundle."""
    generations, published = journal.snapshot()
    jwt_ids = sorted(g.id for g in generations if g.kind is Kind.JWT and g.id in published)
    found = {gid: _jwt_key(journal, gid) for gid in jwt_ids}
    active = rotation.jwt_signing_generation(generations)
    signing = None
    if active is not None:
        key = found.get(active.id) or _jwt_key(journal, active.id)
        signing = JwtSigningKey(key, keys.signer(journal.row(active.id).key_location))
        if signing.signer.public_key.public_numbers() != key.public_key.public_numbers():
            raise CaUnavailable(f"JWT key generation {active.id}: its key does not match the "
                                "public key on record")
    return JwtKeySet(signing, tuple(found.values()))


def _jwt_key(journal: CaJournal, generation_id: int) -> JwtKey:
    row = journal.row(generation_id)
    public = load_pem_public_key(row.certificate_pem.encode())
    if not isinstance(public, SigningPublicKey):
        raise CaUnavailable(f"JWT key generation {generation_id}: not an EC or RSA public key")
    return JwtKey(generation_id, row.serial, public, row.not_after)
