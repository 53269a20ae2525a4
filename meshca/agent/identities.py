"""`WorkloadIdentities` over an attestor: who the process behind a connection is.

The attestors (meshca/agent/attestation/) read /proc and ask the kubelet: blocking I/O, so
they run in a thread. A kubelet that cannot answer is waited for, within `wait`, with short
growing pauses; then the caller hears UNAVAILABLE and retries (SPIFFE clients do). A caller
that cannot be attested safely is refused; a caller that is attested to nothing has no
identity. Every outcome is counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import Identity, PeerCredentials
from meshca.core.spiffe import SpiffeId
from meshca.errors import DependencyError, PermissionDenied, Unavailable

log = logging.getLogger(__name__)

_FIRST_PAUSE = 0.2
_LONGEST_PAUSE = 2.0


class Attestor(Protocol):
    def attest(self, caller: PeerCredentials) -> tuple[SpiffeId, ...]:
        """The caller's identities, () for none; raises AttestationRefused or DependencyError."""
        ...


class AttestedIdentities:
    def __init__(self, attestor: Attestor, kind: str, *, wait: float = 10.0,
                 metrics: AgentMetrics | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._attestor = attestor
        self._kind = kind
        self._wait = wait
        self._metrics = metrics or AgentMetrics()
        self._monotonic = monotonic

    async def attest(self, peer: PeerCredentials) -> Identity | None:
        try:
            found = await self._attest(peer)
        except PermissionDenied:
            self._count("refused")
            raise
        except Unavailable:
            self._count("unavailable")
            raise
        if not found:
            self._count("no_identity")
            log.info("pid %d (uid %d) has no identity", peer.pid, peer.uid)
            return None
        if len(found) > 1:
            # The Workload API could serve several; the server signs one per request, and a
            # second identity for one process is a configuration mistake more often than not.
            log.warning("pid %d matches %d identities; serving the first, %s", peer.pid,
                        len(found), found[0])
        self._count("ok")
        return Identity(found[0])

    async def _attest(self, peer: PeerCredentials) -> tuple[SpiffeId, ...]:
        if peer.pid <= 0:  # the peer's pid is not visible in the agent's pid namespace
            raise PermissionDenied("the caller's process is not visible to the agent (no pid)")
        deadline = self._monotonic() + self._wait
        pause = _FIRST_PAUSE
        while True:
            try:
                return await asyncio.to_thread(self._attestor.attest, peer)
            except DependencyError as exc:
                left = deadline - self._monotonic()
                if left <= 0:
                    log.warning("cannot attest pid %d: %s", peer.pid, exc)
                    raise Unavailable(f"cannot attest now: {exc}") from None
                log.debug("attestation of pid %d waits: %s", peer.pid, exc)
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, _LONGEST_PAUSE)

    def _count(self, outcome: str) -> None:
        self._metrics.attestations.labels(self._kind, outcome).inc()
