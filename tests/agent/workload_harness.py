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
from typing import Any

from meshca.agent.workload_api import WorkloadApiServer
from tests.fakes.agent_workloads import FakeWorkloadIdentities, FakeX509Svids
from tests.unit.pki import CALLER, TRUST_DOMAIN


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(socket_path: str) -> None:
    identities = FakeWorkloadIdentities(
        on_attest=lambda peer: emit("attest", pid=peer.pid, uid=peer.uid, gid=peer.gid))
    svids = FakeX509Svids()
    server = WorkloadApiServer(socket_path, identities, svids)
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
            elif command == "stats":
                assert server.relay is not None
                emit("done", command=command, accepted=server.relay.accepted,
                     peers=len(server.peers))
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
