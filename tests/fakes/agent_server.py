"""The agent's view of the meshca server, in memory: a `WorkloadSigner` that signs real
X509-SVIDs with a test CA (tests/unit/pki.py), and a `BundleSource` the test edits.

`FakeSigner` signs each CSR's key for the identity asked (or, told to misbehave, another),
with leaves living `ttl` from now; `fail_with` makes every call raise that error until cleared;
`calls` counts every call, `signed` the successful ones. `rotate()` moves it to a new root and
intermediate, as a CA rotation would.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from cryptography import x509

from meshca.agent.ports import TrustBundle
from meshca.core import templates
from meshca.core.authority import SigningAuthority, sign_leaf
from meshca.core.bundle import TrustBundle as CoreBundle
from meshca.core.spiffe import SpiffeId
from meshca.errors import MeshcaError
from tests.unit.pki import TRUST_DOMAIN, ec_key, make_intermediate, make_root


def fake_authority(generation: int = 1) -> SigningAuthority:
    """A root and intermediate of their own for each generation (cached keys)."""
    root_key = ec_key("secp256r1", 300 + 2 * generation)
    key = ec_key("secp256r1", 301 + 2 * generation)
    root = make_root(root_key, generation=generation, serial=0x3000 + generation)
    intermediate = make_intermediate(key, root, root_key, generation=generation,
                                     serial=0x4000 + generation)
    return SigningAuthority(generation_id=generation, certificate=intermediate, private_key=key,
                            chain=(root,), bundle=CoreBundle((root,)))


class FakeSigner:
    def __init__(self, authority: SigningAuthority | None = None, *,
                 ttl: timedelta = timedelta(seconds=4)) -> None:
        self.authority = authority or fake_authority()
        self.ttl = ttl
        self.fail_with: Exception | None = None  # a MeshcaError, or a surprise
        self.sign_as: SpiffeId | None = None  # sign for this identity instead (a bad server)
        self.delay = 0.0  # seconds each call takes
        self.calls = 0
        self.signed = 0
        self.asked: list[tuple[SpiffeId, timedelta | None]] = []

    @property
    def root(self) -> x509.Certificate:
        return self.authority.chain[-1]

    def rotate(self, generation: int = 2) -> None:
        self.authority = fake_authority(generation)

    async def sign(self, spiffe_id: SpiffeId, csr_pem: str,
                   ttl: timedelta | None = None) -> tuple[x509.Certificate, ...]:
        self.calls += 1
        self.asked.append((spiffe_id, ttl))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        subject = self.sign_as or spiffe_id
        now = datetime.now(UTC)
        builder = templates.leaf_svid(
            public_key=csr.public_key(), spiffe_id=subject,
            issuer=self.authority.certificate, serial=x509.random_serial_number(),
            not_before=now, not_after=now + (ttl or self.ttl))
        leaf = sign_leaf(self.authority, builder, subject)
        self.signed += 1
        return (leaf, self.authority.certificate, *self.authority.chain)


class FakeBundleSource:
    def __init__(self, roots: tuple[x509.Certificate, ...], *,
                 trust_domain: str = TRUST_DOMAIN,
                 refresh_hint: timedelta | None = None) -> None:
        self.roots = roots
        self.trust_domain = trust_domain
        self.refresh_hint = refresh_hint
        self.fail_with: MeshcaError | None = None
        self.fetches = 0

    async def fetch(self) -> TrustBundle:
        self.fetches += 1
        if self.fail_with is not None:
            raise self.fail_with
        return TrustBundle(self.trust_domain, self.roots, self.refresh_hint, self.fetches)
