"""`BundleSource` over the meshca server's `meshca.v1.SvidService/GetBundles`: the agent's
default. One call gives the own trust domain's SPIFFE bundle (X.509 roots and JWT-SVID keys,
`spiffe_refresh_hint`) and the bundle of every trust domain it federates with, over the same
authenticated channel as the agent's signings (meshca/agent/server_channel.py).

- An answer the agent cannot use is `Unavailable`: the cache keeps what it holds and asks again.
- A federated bundle that does not parse, or that names the own trust domain, is left out
  (logged); the last good one of that trust domain is kept, so one bad foreign bundle neither
  hides the others nor drops roots a workload still needs.
- A server that has no SvidService (UNIMPLEMENTED: an older meshca during an upgrade) is read
  through `fallback` instead (the --server-ca file), with one WARNING.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import grpc

from meshca.agent.bundles import parse_spiffe_bundle
from meshca.agent.ports import BundleSource, TrustBundle
from meshca.agent.server_channel import ServerChannel
from meshca.core.spiffe import SpiffeId
from meshca.errors import Unavailable
from meshca.gen.meshca.v1 import svid_pb2, svid_pb2_grpc

log = logging.getLogger(__name__)

CALL = "bundles"
MAX_FEDERATED = 256  # trust domains; far more than any real federation


class GrpcBundleSource:
    def __init__(self, server: ServerChannel, trust_domain: str, *,
                 fallback: BundleSource | None = None) -> None:
        SpiffeId.for_trust_domain(trust_domain)  # ValueError names what is wrong
        self._server = server
        self._trust_domain = trust_domain
        self._fallback = fallback
        self._fallback_logged = False
        self._last_federated: dict[str, TrustBundle] = {}
        self.calls = 0

    async def fetch(self) -> TrustBundle:
        channel, metadata = await self._server.open(CALL)
        self.calls += 1
        try:
            response = await svid_pb2_grpc.SvidServiceStub(channel).GetBundles(
                svid_pb2.GetBundlesRequest(), metadata=metadata, timeout=self._server.timeout)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.UNIMPLEMENTED and self._fallback is not None:
                return await self._fall_back()
            refused = self._server.failed(CALL, code)
            # A refusal is no reason to drop the bundle either: keep it, ask again later.
            raise Unavailable(f"meshca server at {self._server.target} "
                              f"{'refuses to give' if refused else 'cannot give'} bundles: "
                              f"{code.name}: {details}") from None
        except OSError as exc:
            raise await self._server.unreachable(CALL, exc) from None
        own = parse_spiffe_bundle(response.bundle, self._trust_domain,
                                  source=f"the bundle of {self._trust_domain} from the server")
        return replace(own, federated=self._federated(dict(response.federated_bundles)))

    def _federated(self, documents: dict[str, bytes]) -> dict[str, TrustBundle]:
        if len(documents) > MAX_FEDERATED:
            log.warning("the server sent %d federated bundles; using the first %d",
                        len(documents), MAX_FEDERATED)
        found: dict[str, TrustBundle] = {}
        for name, document in sorted(documents.items())[:MAX_FEDERATED]:
            trust_domain = name.removeprefix("spiffe://")
            try:
                SpiffeId.for_trust_domain(trust_domain)
                if trust_domain == self._trust_domain:
                    raise Unavailable("it names this agent's own trust domain")
                found[trust_domain] = parse_spiffe_bundle(
                    document, trust_domain, source=f"the federated bundle of {trust_domain}",
                    require_roots=False)
            except (Unavailable, ValueError) as exc:
                self._server.count(CALL, "bad_federated_bundle")
                last = self._last_federated.get(trust_domain)
                log.warning("federated bundle %r left out (%s); %s", name[:300], exc,
                            "keeping the last good one" if last else "none held before")
                if last is not None:
                    found[trust_domain] = last
        self._last_federated = found
        return found

    async def _fall_back(self) -> TrustBundle:
        assert self._fallback is not None
        if not self._fallback_logged:
            log.warning("meshca server at %s has no SvidService/GetBundles (an older server?); "
                        "reading the bundle from --server-ca instead, without JWT keys or "
                        "federated bundles", self._server.target)
            self._fallback_logged = True
        return await self._fallback.fetch()
