"""One SDS FetchSecrets from its own process, optionally as another user, so the agent sees
other peer credentials than the test's:

    python -m tests.agent.sds_probe <socket path> [<user>]

Started as root, it loads everything it needs, then drops to `user` (its gid and uid) before
connecting: the venv's interpreter lives where an unprivileged user cannot start it. It prints
one JSON object: {"pid", "uid", "gid", "spiffe_id"} (the `default` secret's URI SAN) or
{..., "code"} (the gRPC status name) when refused.
"""

from __future__ import annotations

import json
import os
import pwd
import sys

import grpc
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

TIMEOUT = 20.0


def main(socket_path: str, user: str | None) -> None:
    if user is not None:
        account = pwd.getpwnam(user)
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    result: dict[str, object] = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        try:
            response = stub.FetchSecrets(
                discovery_pb2.DiscoveryRequest(resource_names=["default"]), timeout=TIMEOUT)
        except grpc.RpcError as exc:
            result["code"] = exc.code().name
        else:
            secret = secret_pb2.Secret()
            response.resources[0].Unpack(secret)
            leaf = x509.load_pem_x509_certificates(
                secret.tls_certificate.certificate_chain.inline_bytes)[0]
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            result["spiffe_id"] = san.value.get_values_for_type(
                x509.UniformResourceIdentifier)[0]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
