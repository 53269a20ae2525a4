"""In-memory stand-ins for the agent's workload ports (meshca/agent/ports.py): who a caller is
(`WorkloadIdentities`), what an identity holds (`X509Svids`) and its JWT-SVIDs and the JWT
bundles (`JwtSvids`), for the Workload API and SDS tests.

`FakeWorkloadIdentities` attests by the caller's uid and records every caller the kernel
reported. `FakeX509Svids` keeps one state per identity, its leaves signed by a test authority:
`rotate()` issues new leaves and keys, `add_root()` puts one more root in the trust bundle, and
every change wakes every open watch; `federated` adds foreign trust domains' roots.
`FakeJwtSvids` mints real ES256 JWT-SVIDs with keys derived from fixed numbers (`jwt_key`), so
a test in another process can sign tokens the fake's bundles accept; `rotate()` publishes
another key, `federate()` a foreign trust domain's, each pushed to every bundle watch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from meshca.agent.ports import (
    Identity,
    JwtBundleSet,
    JwtSvid,
    PeerCredentials,
    X509State,
    X509Svid,
)
from meshca.core import templates
from meshca.core.authority import SigningAuthority, sign_leaf
from meshca.core.jwt import b64url_encode
from meshca.core.jwt_svid import JwtPublicKey
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied, Unavailable
from tests.unit.pki import CALLER, TRUST_DOMAIN, ec_key, make_authority, make_root

OTHER = SpiffeId.for_service_account(TRUST_DOMAIN, "shop", "cart")
FOREIGN_DOMAIN = "b.test"
MODES = ("allow", "deny", "refuse", "unavailable")


class FakeWorkloadIdentities:
    """`by_uid` maps a uid to its identity (None: attested, but no identity); any other uid
    gets `default`. `mode` overrides for everyone: "deny" (no identity), "refuse" (cannot be
    attested: PermissionDenied), "unavailable" (a source is down); "allow" uses the table."""

    def __init__(self, by_uid: Mapping[int, SpiffeId | None] | None = None,
                 default: SpiffeId | None = CALLER,
                 on_attest: Callable[[PeerCredentials], None] | None = None) -> None:
        self.by_uid = dict(by_uid or {})
        self.default = default
        self.mode = "allow"
        self.seen: list[PeerCredentials] = []
        self._on_attest = on_attest

    async def attest(self, peer: PeerCredentials) -> Identity | None:
        self.seen.append(peer)
        if self._on_attest is not None:
            self._on_attest(peer)
        if self.mode == "refuse":
            raise PermissionDenied("the process is gone")
        if self.mode == "unavailable":
            raise Unavailable("the kubelet is down")
        if self.mode == "deny":
            return None
        spiffe_id = self.by_uid.get(peer.uid, self.default)
        return Identity(spiffe_id) if spiffe_id is not None else None


class FakeX509Svids:
    """Set `fail` to make new watches (and open ones, at their next change) raise
    Unavailable, and `empty` to serve states without SVIDs. `open_watches` counts watches
    started and not yet closed, `states_yielded` the states all watches have given out."""

    def __init__(self, authority: SigningAuthority | None = None) -> None:
        self.authority = authority or make_authority()
        self.roots: tuple[x509.Certificate, ...] = self.authority.chain
        self.federated: dict[str, tuple[x509.Certificate, ...]] = {}
        self.fail = False
        self.empty = False
        self.open_watches = 0
        self.watches_started = 0
        self.states_yielded = 0
        self._states: dict[SpiffeId, X509State] = {}
        self._changed = asyncio.Condition()

    def _leaf(self, spiffe_id: SpiffeId) -> X509Svid:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = templates.leaf_svid(
            public_key=key.public_key(), spiffe_id=spiffe_id,
            issuer=self.authority.certificate, serial=x509.random_serial_number(),
            not_before=now - timedelta(minutes=1),
            not_after=min(now + timedelta(hours=1), self.authority.not_after))
        leaf = sign_leaf(self.authority, builder, spiffe_id)
        pkcs8 = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        return X509Svid(spiffe_id, (leaf, self.authority.certificate), pkcs8, hint="internal")

    def _build(self, svid: X509Svid) -> X509State:
        return X509State(svids=(svid,), bundles={**self.federated, TRUST_DOMAIN: self.roots})

    def state(self, spiffe_id: SpiffeId = CALLER) -> X509State:
        """The identity's current state (its first SVID is issued on first use)."""
        if spiffe_id not in self._states:
            self._states[spiffe_id] = self._build(self._leaf(spiffe_id))
        return self._states[spiffe_id]

    def leaf(self, spiffe_id: SpiffeId = CALLER) -> x509.Certificate:
        return self.state(spiffe_id).svids[0].chain[0]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def rotate(self, spiffe_id: SpiffeId | None = None) -> None:
        """New leaves and keys: for `spiffe_id`, or for every identity seen so far."""
        for known in [spiffe_id] if spiffe_id is not None else list(self._states):
            self._states[known] = self._build(self._leaf(known))
        await self._notify()

    async def add_root(self) -> x509.Certificate:
        n = len(self.roots)
        root = make_root(ec_key("secp256r1", 101 + n), generation=1 + n, serial=0x1001 + n)
        self.roots = (*self.roots, root)
        self._states = {spiffe_id: self._build(state.svids[0])
                        for spiffe_id, state in self._states.items()}
        await self._notify()
        return root

    async def poke(self) -> None:
        """Wake every watch without changing anything (to apply `fail` or `empty`)."""
        self._states = {spiffe_id: self._build(state.svids[0])
                        for spiffe_id, state in self._states.items()}
        await self._notify()

    async def watch(self, identity: Identity) -> AsyncIterator[X509State]:
        self.watches_started += 1
        self.open_watches += 1
        try:
            while True:
                if self.fail:
                    raise Unavailable("the server is down and nothing is cached")
                sent = self.state(identity.spiffe_id)
                self.states_yielded += 1
                yield X509State(svids=()) if self.empty else sent
                async with self._changed:
                    while self._states.get(identity.spiffe_id) is sent:
                        await self._changed.wait()
        finally:
            self.open_watches -= 1


def jwt_key(n: int) -> ec.EllipticCurvePrivateKey:
    """The n-th test JWT signing key, the same in every process."""
    return ec.derive_private_key(0x5EED_0000 + n, ec.SECP256R1())


def sign_es256(claims: Mapping[str, object], key: ec.EllipticCurvePrivateKey, kid: str,
               alg: str = "ES256") -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    head = b64url_encode(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    body = b64url_encode(json.dumps(dict(claims)).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class FakeJwtSvids:
    """Own keys `own-<n>` (jwt_key(n)); the foreign trust domain's key `foreign-1`
    (jwt_key(100)) once `federate(True)`. `minted` counts tokens made."""

    def __init__(self, ttl: timedelta = timedelta(minutes=5)) -> None:
        self.ttl = ttl
        self.own: dict[str, ec.EllipticCurvePrivateKey] = {"own-1": jwt_key(1)}
        self.foreign: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.minted = 0
        self._bundles = self._build()
        self._changed = asyncio.Condition()

    def _build(self) -> JwtBundleSet:
        keys: dict[str, dict[str, JwtPublicKey]] = {
            TRUST_DOMAIN: {kid: key.public_key() for kid, key in self.own.items()}}
        if self.foreign:
            keys[FOREIGN_DOMAIN] = {kid: key.public_key() for kid, key in self.foreign.items()}
        return JwtBundleSet(keys)

    async def _notify(self) -> None:
        self._bundles = self._build()
        async with self._changed:
            self._changed.notify_all()

    async def rotate(self) -> str:
        kid = f"own-{len(self.own) + 1}"
        self.own[kid] = jwt_key(len(self.own) + 1)
        await self._notify()
        return kid

    async def federate(self, on: bool) -> None:
        self.foreign = {"foreign-1": jwt_key(100)} if on else {}
        await self._notify()

    async def fetch(self, identity: Identity, audience: tuple[str, ...]) -> JwtSvid:
        kid = sorted(self.own)[-1]
        now = datetime.now(UTC)
        expiry = now + self.ttl
        claims = {"sub": identity.spiffe_id.uri, "aud": list(audience),
                  "exp": int(expiry.timestamp()), "iat": int(now.timestamp())}
        self.minted += 1
        return JwtSvid(sign_es256(claims, self.own[kid], kid), identity.spiffe_id, expiry, claims)

    def jwt_bundles(self) -> JwtBundleSet:
        return self._bundles

    async def watch_jwt_bundles(self) -> AsyncIterator[JwtBundleSet]:
        while True:
            sent = self._bundles
            yield sent
            async with self._changed:
                while self._bundles is sent:
                    await self._changed.wait()
