"""The agent's one TLS channel to the meshca server, and its credentials for each call.

Shared by every client of the server (CreateCertificate, MintJWTSVID, GetBundles) so that they
authenticate alike and dial once. The agent's token is re-read from its file on every call (the
kubelet rotates it) and sent as `authorization: Bearer`, with `clusterid` when set. The
server's roots are re-read on every call too (the ConfigMap they come from is rewritten on
rotation); the channel is rebuilt when they change and after the server could not be reached,
so a restarted server is dialled again at the agent's own back-off rather than at gRPC's
reconnect timer.

Failures map onto the two errors the agent's caches act on: worth retrying (`Unavailable`) or
a refusal (`PermissionDenied`), counted in `meshca_agent_server_errors_total{call, code}`.
Messages name the gRPC code and the server's detail, never the token.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc

from meshca.agent.metrics import AgentMetrics
from meshca.agent.settings import AgentSettings
from meshca.errors import MeshcaError, PermissionDenied, Unavailable

# The server refuses the agent or the workload: asking again soon changes nothing.
REFUSALS = frozenset({
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
})
# Any other code (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNKNOWN, INTERNAL,
# ABORTED, CANCELLED...) is worth retrying with back-off.
# Channel failures after which the next call dials afresh.
_REDIAL = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_MAX_MESSAGE = 4 * 1024 * 1024
Metadata = list[tuple[str, str]]


class ServerChannel:
    """Calls to `target` (HOST:PORT), whose certificate must verify under the PEM roots in
    `server_ca` for the DNS name `server_name`, as the account whose token is in `token_file`."""

    def __init__(self, target: str, *, server_ca: str | Path, server_name: str,
                 token_file: str | Path, cluster_id: str | None = None,
                 timeout: timedelta = timedelta(seconds=10),
                 metrics: AgentMetrics | None = None) -> None:
        if timeout <= timedelta(0):
            raise ValueError("the server timeout must be positive")
        self.target = target
        self.timeout = timeout.total_seconds()
        self._server_ca = Path(server_ca)
        self._server_name = server_name
        self._token_file = Path(token_file)
        self._cluster_id = cluster_id
        self._metrics = metrics
        self._channel: grpc.aio.Channel | None = None
        self._channel_roots: bytes | None = None

    @classmethod
    def from_settings(cls, settings: AgentSettings,
                      metrics: AgentMetrics | None = None) -> ServerChannel:
        return cls(settings.server, server_ca=settings.server_ca,
                   server_name=settings.verified_server_name, token_file=settings.token_file,
                   cluster_id=settings.cluster_id, timeout=settings.server_timeout,
                   metrics=metrics)

    @property
    def server_ca(self) -> Path:
        return self._server_ca

    async def open(self, call: str) -> tuple[grpc.aio.Channel, Metadata]:
        """The channel and the call metadata for one call named `call` (metrics label).
        Raises Unavailable when the token or the roots cannot be read."""
        token = self._read(call, self._token_file, "the agent's token file").decode().strip()
        if not token:
            self.count(call, "token")
            raise Unavailable(f"the agent's token file {self._token_file} is empty")
        roots = self._read(call, self._server_ca, "the server's CA file (--server-ca)")
        metadata = [("authorization", f"Bearer {token}")]
        if self._cluster_id:
            metadata.append(("clusterid", self._cluster_id))
        return await self._channel_for(roots), metadata

    def failed(self, call: str, code: grpc.StatusCode) -> bool:
        """Count a call that failed with `code`; True when it is a refusal (not worth
        retrying soon). After a channel failure the next call dials afresh."""
        self.count(call, code.name.lower())
        if code in _REDIAL:
            self._channel_roots = None  # close() is awaited on the next call, not here
        return code in REFUSALS

    def rpc_error(self, call: str, code: grpc.StatusCode, refused: str,
                  unavailable: str) -> MeshcaError:
        """PermissionDenied(`refused`) for a refusal, else Unavailable(`unavailable`)."""
        return PermissionDenied(refused) if self.failed(call, code) else Unavailable(unavailable)

    async def unreachable(self, call: str, exc: OSError) -> Unavailable:
        await self._drop_channel()
        self.count(call, "connection")
        return Unavailable(f"meshca server at {self.target} cannot be reached: "
                           f"{type(exc).__name__}: {exc}")

    def count(self, call: str, code: str) -> None:
        if self._metrics is not None:
            self._metrics.server_errors.labels(call, code).inc()

    async def close(self) -> None:
        await self._drop_channel()

    def _read(self, call: str, path: Path, description: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            self.count(call, "token" if path == self._token_file else "server_ca")
            raise Unavailable(f"cannot read {description} {path}: {exc.strerror}") from None

    async def _channel_for(self, roots: bytes) -> grpc.aio.Channel:
        if self._channel is not None and roots == self._channel_roots:
            return self._channel
        await self._drop_channel()
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        self._channel = grpc.aio.secure_channel(self.target, credentials, options=[
            ("grpc.ssl_target_name_override", self._server_name),
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ])
        self._channel_roots = roots
        return self._channel

    async def _drop_channel(self) -> None:
        channel, self._channel, self._channel_roots = self._channel, None, None
        if channel is not None:
            await channel.close()
