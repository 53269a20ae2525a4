"""`JwtMinter` over the meshca server's `meshca.v1.SvidService/MintJWTSVID`, as a node agent:
the agent's own token over the shared channel (meshca/agent/server_channel.py), the workload
named in `spiffe_id` (the server lets only its --trusted-node-accounts do that).

The answer is read, not trusted blindly: a token whose `sub`, `aud` or `exp` is not what was
asked for is refused (PermissionDenied), as a certificate chain for another identity is. Its
signature is the workload's relying parties' business (and ValidateJWTSVID's).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc

from meshca.agent.ports import JwtSvid
from meshca.agent.server_channel import ServerChannel
from meshca.core.jwt_svid import InvalidJwtSvid, unverified_claims
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied, Unavailable
from meshca.gen.meshca.v1 import svid_pb2, svid_pb2_grpc

CALL = "mint_jwt"


class GrpcJwtMinter:
    def __init__(self, server: ServerChannel) -> None:
        self._server = server
        self.calls = 0

    async def mint(self, spiffe_id: SpiffeId, audience: tuple[str, ...],
                   ttl: timedelta | None = None) -> JwtSvid:
        channel, metadata = await self._server.open(CALL)
        request = svid_pb2.MintJWTSVIDRequest(
            audience=list(audience), spiffe_id=spiffe_id.uri,
            ttl_seconds=int(ttl.total_seconds()) if ttl is not None else 0)
        self.calls += 1
        try:
            response = await svid_pb2_grpc.SvidServiceStub(channel).MintJWTSVID(
                request, metadata=metadata, timeout=self._server.timeout)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            raise self._server.rpc_error(
                CALL, code,
                refused=f"meshca server refused a JWT-SVID for {spiffe_id}: {code.name}: "
                        f"{details}",
                unavailable=f"meshca server at {self._server.target} cannot mint a JWT-SVID "
                            f"now: {code.name}: {details}") from None
        except OSError as exc:
            raise await self._server.unreachable(CALL, exc) from None
        try:
            return self._check(response, spiffe_id, audience)
        except PermissionDenied:
            self._server.count(CALL, "bad_token")
            raise

    async def close(self) -> None:
        await self._server.close()

    @staticmethod
    def _check(response: svid_pb2.MintJWTSVIDResponse, spiffe_id: SpiffeId,
               audience: tuple[str, ...]) -> JwtSvid:
        try:
            claims = unverified_claims(response.token)
        except InvalidJwtSvid as exc:
            raise PermissionDenied(f"meshca server answered with a token that does not parse: "
                                   f"{exc}") from None
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        exp = claims.get("exp")
        if claims.get("sub") != spiffe_id.uri or response.spiffe_id not in ("", spiffe_id.uri):
            raise PermissionDenied(f"meshca server answered with a JWT-SVID for another "
                                   f"identity than {spiffe_id}")
        if sorted(set(auds)) != sorted(set(audience)):
            raise PermissionDenied("meshca server answered with a JWT-SVID for another audience")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise PermissionDenied("meshca server answered with a JWT-SVID without exp")
        expiry = datetime.fromtimestamp(exp, UTC)
        if expiry <= datetime.now(UTC):
            raise Unavailable("meshca server answered with a JWT-SVID that has already expired "
                              "(are the clocks right?)")
        return JwtSvid(response.token, spiffe_id, expiry, claims)
