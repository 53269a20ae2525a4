"""Envoy's Secret Discovery Service (`envoy.service.secret.v3.SecretDiscoveryService`) over the
agent's ports, and the server that serves it on its own Unix socket.

The second front of the same agent: the caller is attested from its connection's peer
credentials exactly as on the Workload API (Envoy sends no `workload.spiffe.io` header), and
served the secrets of sds_secrets.py from the identity's `X509Svids.watch`. `StreamSecrets`
follows the state-of-the-world rules of xds_session.py and pushes a new version on every
change of the watched state; `FetchSecrets` answers once; `DeltaSecrets` is not served (as in
Istio's agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.secret.v3 import sds_pb2_grpc

from meshca.agent.callers import attest_caller, refuse
from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import Identity, WorkloadIdentities, X509State, X509Svids
from meshca.agent.sds_secrets import SECRET_TYPE, secrets_for
from meshca.agent.unix_front import DEFAULT_LIMITS, PeerRegistry, UnixGrpcServer
from meshca.agent.xds_session import RequestKind, SotwSession, discovery_response
from meshca.core.connection_limits import ConnectionLimits
from meshca.errors import PermissionDenied, Unavailable

log = logging.getLogger(__name__)
API = "sds"  # the metrics' `api` label
_QUEUE = 64  # requests and state changes waiting for the stream's loop


class _End:
    """The client closed its side of the stream."""


async def _close(iterator: AsyncIterator[X509State]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class SecretDiscovery(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, peers: PeerRegistry, identities: WorkloadIdentities, svids: X509Svids,
                 *, metrics: AgentMetrics | None = None) -> None:
        self._peers = peers
        self._identities = identities
        self._svids = svids
        self._metrics = metrics

    def _describe(self, context: grpc.aio.ServicerContext, identity: Identity) -> str:
        peer = self._peers.get(context.peer())
        pid = peer.pid if peer is not None else "?"
        return f"pid {pid} ({identity.spiffe_id})"

    async def StreamSecrets(self, request_iterator: AsyncIterator[Any],  # noqa: N802
                            context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        identity = await attest_caller(self._peers, self._identities, context)
        who = self._describe(context, identity)
        session = SotwSession(SECRET_TYPE, who)
        events: asyncio.Queue[Any] = asyncio.Queue(_QUEUE)
        tasks = [asyncio.create_task(self._read(request_iterator, events)),
                 asyncio.create_task(self._watch(identity, events))]
        if self._metrics is not None:
            self._metrics.streams.labels(API).inc()
        try:
            while True:
                event = await events.get()
                if isinstance(event, _End):
                    return
                if isinstance(event, Unavailable):
                    await refuse(context, grpc.StatusCode.UNAVAILABLE, f"no SVID to serve: {event}")
                if isinstance(event, PermissionDenied):  # the server refused this identity
                    await refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                                 f"no SVID issued: {event}")
                if isinstance(event, X509State):
                    if not event.svids:
                        await refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                                     "no identity issued")
                    response = session.update(secrets_for(identity, event))
                else:
                    kind, response = session.request(event)
                    if kind is RequestKind.NACK:
                        self._rejected(who, event)
                if response is not None:
                    yield response
                    if self._metrics is not None:
                        self._metrics.svids_served.labels(API).inc()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._metrics is not None:
                self._metrics.streams.labels(API).dec()

    def _rejected(self, who: str, request: Any) -> None:
        log.warning("Envoy at %s rejected the secrets it was sent (NACK, keeps version %r): "
                    "code %d: %s", who, request.version_info, request.error_detail.code,
                    request.error_detail.message)
        if self._metrics is not None:
            self._metrics.sds_rejections.inc()

    @staticmethod
    async def _read(requests: AsyncIterator[Any], events: asyncio.Queue[Any]) -> None:
        with contextlib.suppress(grpc.RpcError):
            async for request in requests:
                await events.put(request)
        await events.put(_End())

    async def _watch(self, identity: Identity, events: asyncio.Queue[Any]) -> None:
        watch = self._svids.watch(identity)
        try:
            async for state in watch:
                await events.put(state)
        except (Unavailable, PermissionDenied) as exc:
            await events.put(exc)
        finally:
            await _close(watch)

    async def FetchSecrets(self, request: Any,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> Any:
        identity = await attest_caller(self._peers, self._identities, context)
        watch = self._svids.watch(identity)
        try:
            state = await anext(watch)
        except (Unavailable, StopAsyncIteration) as exc:
            await refuse(context, grpc.StatusCode.UNAVAILABLE, f"no SVID to serve: {exc}")
        except PermissionDenied as exc:
            await refuse(context, grpc.StatusCode.PERMISSION_DENIED, f"no SVID issued: {exc}")
        finally:
            await _close(watch)
        if not state.svids:
            await refuse(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        available = secrets_for(identity, state)
        wanted = {name: available[name] for name in request.resource_names if name in available}
        if self._metrics is not None and wanted:
            self._metrics.svids_served.labels(API).inc()
        return discovery_response(SECRET_TYPE, wanted)

    async def DeltaSecrets(self, request_iterator: AsyncIterator[Any],  # noqa: N802
                           context: grpc.aio.ServicerContext) -> None:
        await refuse(context, grpc.StatusCode.UNIMPLEMENTED,
                     "incremental SDS is not served: use StreamSecrets")


class SdsServer(UnixGrpcServer):
    """SDS on the public Unix socket `socket_path`, relayed to a gRPC server on a private one."""

    def __init__(self, socket_path: str, identities: WorkloadIdentities, svids: X509Svids,
                 limits: ConnectionLimits = DEFAULT_LIMITS, *,
                 metrics: AgentMetrics | None = None) -> None:
        def register(server: grpc.aio.Server, peers: PeerRegistry) -> None:
            sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(
                SecretDiscovery(peers, identities, svids, metrics=metrics), server)

        super().__init__("sds", socket_path, register, limits)
