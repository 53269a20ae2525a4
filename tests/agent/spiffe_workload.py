"""A workload built on the unmodified PyPI SPIFFE clients, run as its own process by the tests
(with another gid, so the agent attests it to another identity):

    python -m tests.agent.spiffe_workload serve     # mTLS server; prints {"port": N} then
                                                    # {"me": ID, "peer": ID} per connection
    python -m tests.agent.spiffe_workload fetch     # prints {"spiffe_id": ...} or {"error": ...}
    python -m tests.agent.spiffe_workload bundles   # prints {"trust_domains": [...]}

It finds the agent through SPIFFE_ENDPOINT_SOCKET, as any SPIFFE workload does.
"""

from __future__ import annotations

import json
import sys

from cryptography import x509
from OpenSSL import SSL
from spiffe import WorkloadApiClient, X509Source
from spiffetls import ListenOptions, ServerTlsMode, listen


def uri_of(certificate: x509.Certificate) -> str:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return str(names.get_values_for_type(x509.UniformResourceIdentifier)[0])


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def serve() -> None:
    source = X509Source(timeout_in_seconds=20)
    me = str(source.svid.spiffe_id)
    server = listen("127.0.0.1:0", source, ListenOptions(tls_mode=ServerTlsMode.MTLS))
    say(port=server.getsockname()[1], me=me)
    while True:
        connection, _ = server.accept()
        try:
            connection.do_handshake()
            peer = connection.get_peer_certificate()
            assert peer is not None
            connection.sendall(json.dumps({"me": me}).encode() + b"\n")
            say(me=me, peer=uri_of(peer.to_cryptography()))
        except SSL.Error as exc:
            say(error=f"handshake: {exc}")
        finally:
            connection.shutdown()
            connection.close()


def fetch() -> None:
    with WorkloadApiClient() as client:
        try:
            say(spiffe_id=str(client.fetch_x509_svid().spiffe_id))
        except Exception as exc:  # noqa: BLE001 - the test reads what the client saw
            say(error=f"{type(exc).__name__}: {exc}")


def bundles() -> None:
    with WorkloadApiClient() as client:
        found = client.fetch_x509_bundles().bundles
        say(trust_domains=sorted(str(b.trust_domain) for b in found))


if __name__ == "__main__":
    {"serve": serve, "fetch": fetch, "bundles": bundles}[sys.argv[1]]()
