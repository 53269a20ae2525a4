"""A Workload API server fed by in-memory fakes, run as its own process by the tests.

The PyPI `spiffe` client and meshca's generated Workload API modules cannot share a process
(both register the spec's unpackaged message names in protobuf's default pool), so the tests
run the client in-process and this server beside them:

    python -m tests.agent.workload_harness <socket path>

It prints one JSON object per line on stdout: {"event": "ready"} once serving, {"event":
"attest", "pid", "uid", "gid"} for every attestation, and {"event": "done", "command": ...,
...} after each command read from stdin: `rotate` (a new leaf and key), `bundle` (a second
root in the bundle), `deny` (attest to no identity), `refuse` (attestation fails),
`allow`, `stats` (connections accepted so far), `jwtkey` (another JWT key in the own bundle),
`federate` / `unfederate` (the foreign trust domain's roots and JWT key in, or out).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from meshca.agent.workload_api import WorkloadApiServer
from tests.fakes.agent_workloads import (
    FOREIGN_DOMAIN,
    FakeJwtSvids,
    FakeWorkloadIdentities,
    FakeX509Svids,
)
from tests.unit.pki import CALLER, TRUST_DOMAIN, ec_key, make_root


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(socket_path: str) -> None:
    identities = FakeWorkloadIdentities(
        on_attest=lambda peer: emit("attest", pid=peer.pid, uid=peer.uid, gid=peer.gid))
    svids = FakeX509Svids()
    jwts = FakeJwtSvids()
    server = WorkloadApiServer(socket_path, identities, svids, jwt_svids=jwts)
    await server.start()
    emit("ready")
    loop = asyncio.get_running_loop()
    try:
        while command := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if command in ("rotate", "bundle"):
                await (svids.rotate(CALLER) if command == "rotate" else svids.add_root())
                emit("done", command=command, serial=svids.leaf(CALLER).serial_number,
                     roots=len(svids.state(CALLER).bundles[TRUST_DOMAIN]))
            elif command in ("allow", "deny", "refuse"):
                identities.mode = command
                emit("done", command=command)
            elif command == "jwtkey":
                emit("done", command=command, kid=await jwts.rotate())
            elif command in ("federate", "unfederate"):
                on = command == "federate"
                foreign = make_root(ec_key("secp256r1", 555), generation=55, serial=0x5555)
                svids.federated = {FOREIGN_DOMAIN: (foreign,)} if on else {}
                await svids.poke()
                await jwts.federate(on)
                emit("done", command=command)
            elif command == "stats":
                assert server.relay is not None
                emit("done", command=command, accepted=server.relay.accepted,
                     peers=len(server.peers))
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
