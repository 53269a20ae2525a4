"""Issue 12, attack 1: identity bound to the connection that proved it.

The review took over an mTLS admin's identity by connecting, from another loopback address
with the victim's source port, to the plaintext upstream the TLS front relayed to. These tests
run that attack from outside, as an unprivileged user where the suite runs as root, while a
victim holds keep-alive connections, and check that nothing answers it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.infra.keyfiles import private_key_pem
from tests.security import procnet
from tests.support import AdminClient, MeshcaProcess, csr_pem, ec_key, start_meshca

TD = "spiffe://cluster.local"
ADMIN_ID = f"{TD}/ns/ops/sa/cli-admin"
ATTACKER = Path(__file__).with_name("attacker.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    process = start_meshca(tmp_path_factory.mktemp("binding") / "data", "--workers", "2",
                           "--admin-spiffe-id", f"{ADMIN_ID}=admin")
    yield process
    process.stop()


def _client_certificate(server: MeshcaProcess, namespace: str, account: str) -> tuple[bytes, bytes]:
    key = ec_key()
    chain = server.create_certificate(csr_pem(key), token=server.token(namespace, account))
    return "".join(chain[:-1]).encode(), private_key_pem(key)


def _ports(server: MeshcaProcess) -> dict[str, int]:
    endpoints = json.loads((server.data_dir / "endpoints.json").read_text())
    return {name: int(str(endpoints[name]).rsplit(":", 1)[1])
            for name in ("grpc", "admin", "metrics", "ext_authz")}


def _keep_alive_admin(server: MeshcaProcess, chain: bytes, key: bytes) -> http.client.HTTPSConnection:
    """The victim: an mTLS admin with an open keep-alive connection."""
    client = AdminClient(server, chain, key)
    connection = http.client.HTTPSConnection(client.host, client.port, context=client.context,
                                             timeout=10)
    connection.sock = client.context.wrap_socket(
        socket.create_connection((client.host, client.port)), server_hostname="localhost")
    connection.request("GET", "/v1/ca")
    response = connection.getresponse()
    assert response.status == 200, response.read()
    response.read()
    return connection


def test_meshca_listens_on_its_declared_ports_only(server: MeshcaProcess) -> None:
    """No plaintext upstream on any TCP port: the process tree listens on the four endpoints
    it announces, and the gRPC and admin ports speak nothing but TLS."""
    pids = procnet.process_tree(server.process.pid)
    assert len(pids) >= 2, "the second worker process is part of the tree"
    ports = _ports(server)
    assert procnet.tcp_listening_ports(procnet.socket_inodes(pids)) == set(ports.values())
    for name in ("grpc", "admin"):
        with socket.create_connection(("127.0.0.1", ports[name]), timeout=5) as plain:
            plain.sendall(b"GET /v1/ca HTTP/1.1\r\nHost: localhost\r\n\r\n")
            reply = plain.recv(4096)
        assert not reply.startswith(b"HTTP/"), f"{name} answered plaintext HTTP: {reply[:80]!r}"


def test_relay_sockets_are_in_a_directory_no_other_user_can_enter(server: MeshcaProcess) -> None:
    paths = procnet.unix_socket_paths(procnet.socket_inodes(procnet.process_tree(server.process.pid)))
    upstreams = {p for p in paths if p.endswith("grpc.sock")}
    assert len(upstreams) == 2, f"one private gRPC socket per worker: {paths}"
    for path in upstreams:
        directory = Path(path).parent
        assert directory.stat().st_mode & 0o777 == 0o700
        assert directory.stat().st_uid == os.getuid()


class _BusyVictim(threading.Thread):
    """An mTLS admin that keeps using its keep-alive connection while the attack runs."""

    def __init__(self, connection: http.client.HTTPSConnection) -> None:
        super().__init__(daemon=True)
        self.connection = connection
        self.done = threading.Event()
        self.statuses: list[int] = []

    def run(self) -> None:
        while not self.done.wait(0.3):
            self.connection.request("GET", "/v1/ca")
            response = self.connection.getresponse()
            response.read()
            self.statuses.append(response.status)


@pytest.mark.skipif(os.geteuid() != 0, reason="running the attacker as `nobody` needs root")
def test_unprivileged_local_process_cannot_act_as_a_connected_admin(server: MeshcaProcess) -> None:
    chain, key = _client_certificate(server, "ops", "cli-admin")
    victim = _BusyVictim(_keep_alive_admin(server, chain, key))
    victim.start()
    renewing = server.channel(chain, key)  # a renewing workload's open gRPC connection
    stub = ca_pb2_grpc.IstioCertificateServiceStub(renewing)
    stub.CreateCertificate(ca_pb2.IstioCertificateRequest(csr=csr_pem()), timeout=30)
    tokens_before = _admin_token_count(server)
    issued_before = server.issued_count()
    try:
        ports = _ports(server)
        # Every port the tree listens on, not only the announced ones: a plaintext upstream
        # would be among them.
        inodes = procnet.socket_inodes(procnet.process_tree(server.process.pid))
        listening = procnet.tcp_listening_ports(inodes)
        # This server's own Unix sockets (its private gRPC sockets and relay names). Other
        # meshca sockets on the machine, such as a node agent's public Workload API socket,
        # are open to every user by design and are not this test's business.
        server_unix = procnet.unix_socket_paths(inodes)
        result = subprocess.run(
            ["/usr/bin/python3", str(ATTACKER), ",".join(str(p) for p in sorted(listening))],
            user="nobody", capture_output=True, text=True, timeout=120, check=True, cwd="/")
        report = json.loads(result.stdout)
    finally:
        victim.done.set()
        victim.join(10)
        victim.connection.close()
        renewing.close()
    assert victim.statuses and set(victim.statuses) == {200}
    assert report["established"], "the attacker saw the victims' connections, as in the review"
    for attempt in report["tcp"]:
        reply = attempt["reply"]
        assert "mca_" not in reply and "BEGIN CERTIFICATE" not in reply, attempt
        assert not reply.startswith(("HTTP/1.1 2", "HTTP/1.0 2")), attempt
        if attempt["port"] in (ports["grpc"], ports["admin"]):
            assert not reply.startswith("HTTP/"), attempt
    tried = [a for a in report["unix"] if a["path"] in server_unix]
    assert tried, "the attacker found the server's relay sockets in /proc/net/unix"
    assert all(a.get("error") == "PermissionError" for a in tried), tried
    assert _admin_token_count(server) == tokens_before
    assert server.issued_count() == issued_before


def _admin_token_count(server: MeshcaProcess) -> int:
    token = (server.data_dir / "admin-token").read_text().strip()
    response = AdminClient(server).get("/v1/admin-tokens", token=token)
    assert response.status == 200
    return len(response.json())


def test_a_certificate_speaks_only_for_its_own_connection(server: MeshcaProcess) -> None:
    """While an mTLS admin and a renewing workload hold their connections open, new
    connections without a certificate (same process, same address) get no identity."""
    chain, key = _client_certificate(server, "ops", "cli-admin")
    victim = _keep_alive_admin(server, chain, key)
    renewing = server.channel(chain, key)
    stub = ca_pb2_grpc.IstioCertificateServiceStub(renewing)
    try:
        stub.CreateCertificate(ca_pb2.IstioCertificateRequest(csr=csr_pem()), timeout=30)
        anonymous = AdminClient(server)
        for _ in range(5):
            response = anonymous.post("/v1/admin-tokens", {"role": "admin", "name": "stolen"})
            assert response.status == 401, response.body
        bare = grpc.secure_channel(server.grpc_addr, grpc.ssl_channel_credentials(server.bundle_pem),
                                   options=[("grpc.ssl_target_name_override", "localhost")])
        with pytest.raises(grpc.RpcError) as refused:
            ca_pb2_grpc.IstioCertificateServiceStub(bare).CreateCertificate(
                ca_pb2.IstioCertificateRequest(csr=csr_pem()), timeout=30)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        bare.close()
        # The victim's own connection still carries its identity.
        victim.request("GET", "/v1/admin-tokens")
        answer = victim.getresponse()
        assert answer.status == 200, answer.read()
        answer.read()
    finally:
        victim.close()
        renewing.close()


def test_renewal_names_the_certificate_of_its_own_connection(server: MeshcaProcess) -> None:
    """Two workloads renew at the same time over their own connections: each gets its own
    identity back, never the other's."""
    channels = {}
    for account in ("alpha", "beta"):
        chain, key = _client_certificate(server, "shop", account)
        channels[account] = server.channel(chain, key)
    try:
        for _ in range(10):
            for account, channel in channels.items():
                chain = ca_pb2_grpc.IstioCertificateServiceStub(channel).CreateCertificate(
                    ca_pb2.IstioCertificateRequest(csr=csr_pem()), timeout=30).cert_chain
                leaf = x509.load_pem_x509_certificate(chain[0].encode())
                sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                assert sans.get_values_for_type(x509.UniformResourceIdentifier) == \
                    [f"{TD}/ns/shop/sa/{account}"]
    finally:
        for channel in channels.values():
            channel.close()

