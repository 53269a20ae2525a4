"""A Workload API server fed by in-memory fakes, run as its own process by the tests.

The PyPI `spiffe` client and meshca's generated Workload API modules cannot share a process
(both register the spec's unpackaged message names in protobuf's default pool), so the tests
run the client in-process and this server beside them:

    python -m tests.agent.workload_harness <socket path>

It prints one JSON object per line on stdout: {"event": "ready"} once serving, {"event":
"attest", "pid", "uid", "gid"} for every attestation, and {"event": "done", "command": ...,
...} after each command read from stdin: `rotate` (a new leaf and key), `bundle` (a second
root in the bundle), `deny` (attest to no identity), `refuse` (attestation fails),
`allow`, `stats` (connections accepted so far).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from meshca.agent.ports import Identity, PeerCredentials, X509State, X509Svid
from meshca.agent.workload_api import WorkloadApiServer
from meshca.core import templates
from meshca.core.authority import SigningAuthority, sign_leaf
from meshca.errors import PermissionDenied
from tests.unit.pki import CALLER, TRUST_DOMAIN, ec_key, make_authority, make_root


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class FakeIdentities:
    """Every caller is CALLER, unless told otherwise; records what the kernel reported."""

    def __init__(self) -> None:
        self.mode = "allow"

    async def attest(self, peer: PeerCredentials) -> Identity | None:
        emit("attest", pid=peer.pid, uid=peer.uid, gid=peer.gid)
        if self.mode == "refuse":
            raise PermissionDenied("the process is gone")
        return Identity(CALLER) if self.mode == "allow" else None


class FakeSvids:
    """One identity's state; every change wakes every open watch."""

    def __init__(self, authority: SigningAuthority) -> None:
        self._authority = authority
        self._roots: tuple[x509.Certificate, ...] = authority.chain
        self._changed = asyncio.Condition()
        self.state = self._build()

    def _leaf(self) -> X509Svid:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = templates.leaf_svid(
            public_key=key.public_key(), spiffe_id=CALLER, issuer=self._authority.certificate,
            serial=x509.random_serial_number(), not_before=now - timedelta(minutes=1),
            not_after=min(now + timedelta(hours=1), self._authority.not_after))
        leaf = sign_leaf(self._authority, builder, CALLER)
        pkcs8 = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        return X509Svid(CALLER, (leaf, self._authority.certificate), pkcs8, hint="internal")

    def _build(self, svid: X509Svid | None = None) -> X509State:
        return X509State(svids=(svid or self._leaf(),), bundles={TRUST_DOMAIN: self._roots})

    async def change(self, *, new_root: bool = False) -> None:
        if new_root:
            self._roots = (*self._roots, make_root(ec_key("secp256r1", 102), generation=2,
                                                   serial=0x1002))
        self.state = self._build()
        async with self._changed:
            self._changed.notify_all()

    async def watch(self, identity: Identity) -> AsyncIterator[X509State]:
        while True:
            sent = self.state
            yield sent
            async with self._changed:
                while self.state is sent:
                    await self._changed.wait()


async def main(socket_path: str) -> None:
    identities = FakeIdentities()
    svids = FakeSvids(make_authority())
    server = WorkloadApiServer(socket_path, identities, svids)
    await server.start()
    emit("ready")
    loop = asyncio.get_running_loop()
    try:
        while command := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if command in ("rotate", "bundle"):
                await svids.change(new_root=command == "bundle")
                leaf = svids.state.svids[0].chain[0]
                emit("done", command=command, serial=leaf.serial_number,
                     roots=len(svids.state.bundles[TRUST_DOMAIN]))
            elif command in ("allow", "deny", "refuse"):
                identities.mode = command
                emit("done", command=command)
            elif command == "stats":
                assert server.relay is not None
                emit("done", command=command, accepted=server.relay.accepted,
                     peers=len(server.peers))
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
