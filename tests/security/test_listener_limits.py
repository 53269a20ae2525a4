"""Issue 12, attack 3: unauthenticated clients cannot exhaust the server.

Silent and half-open connection floods, idle TLS connections, too many connections from one
address, oversized bodies and heads, token guessing: each against a real server from outside,
each asserting the safe outcome and that a legitimate caller from another address is still
served."""

from __future__ import annotations

import json
import select
import socket
import ssl
import struct
import time
from collections.abc import Iterator

import pytest

from tests.security import procnet
from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, start_meshca

PER_SOURCE = 20
TOTAL = 60
HANDSHAKE_SECONDS = 1.5
IDLE_SECONDS = 2.0
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    process = start_meshca(
        tmp_path_factory.mktemp("limits") / "data",
        "--max-connections-per-source", str(PER_SOURCE), "--max-connections", str(TOTAL),
        "--tls-handshake-timeout", f"{HANDSHAKE_SECONDS}s",
        "--connection-idle-timeout", f"{IDLE_SECONDS}s",
        "--max-request-bytes", str(BODY_LIMIT), "--max-header-bytes", "16384",
        "--admin-auth-failures", "5", "--admin-auth-backoff", "2s")
    yield process
    process.stop()


def _addr(server: MeshcaProcess, name: str) -> tuple[str, int]:
    text = {"grpc": server.grpc_addr, "admin": server.admin_addr,
            "metrics": server.metrics_addr}[name]
    host, _, port = text.rpartition(":")
    return host, int(port)


def _silent(server: MeshcaProcess, name: str, source: str, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect(_addr(server, name))
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True if the server closes `sock` within `within` seconds (whatever it sent first)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except OSError:
            return True  # reset: closed as well
    return False


def _closed_now(sockets: list[socket.socket], wait: float) -> list[socket.socket]:
    """The sockets the server has closed after `wait` seconds (checked all at once)."""
    time.sleep(wait)
    readable, _, _ = select.select(sockets, [], [], 0)
    return [s for s in readable if _closed_by_server(s, 0.05)]


def _wait_until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _legit_issuance(server: MeshcaProcess) -> None:
    assert server.create_certificate(csr_pem())[0].startswith("-----BEGIN CERTIFICATE-----")


def _metric(server: MeshcaProcess, name: str, **labels: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://{server.metrics_addr}/metrics", timeout=10).read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{wanted}}}")


@pytest.mark.parametrize("listener", ["grpc", "admin", "metrics"])
def test_one_address_cannot_hold_more_than_its_share(server: MeshcaProcess, listener: str) -> None:
    flood = _silent(server, listener, "127.0.0.2", PER_SOURCE + 15)
    try:
        refused = _closed_now(flood, 0.3)
        assert len(refused) == 15, "connections past the per-source cap are closed at once"
        _legit_issuance(server)  # another address is served meanwhile
        assert AdminClient(server).get("/healthz").status == 200
        assert _metric(server, "meshca_connections_refused_total", listener=listener,
                       reason="max-connections-per-source") >= 15
    finally:
        for sock in flood:
            sock.close()


def test_metrics_connections_are_closed_when_idle(server: MeshcaProcess) -> None:
    """The metrics port (plaintext) is on the same kind of listener: idle is closed too."""
    idle = _silent(server, "metrics", "127.0.0.5", 3)
    try:
        assert all(_closed_by_server(s, IDLE_SECONDS + 4) for s in idle)
    finally:
        for sock in idle:
            sock.close()
    assert _metric(server, "meshca_connections_refused_total", listener="metrics",
                   reason="idle-timeout") >= 3


def test_silent_connections_are_closed_after_the_handshake_timeout(server: MeshcaProcess) -> None:
    flood = _silent(server, "grpc", "127.0.0.3", 10)
    try:
        started = time.monotonic()
        assert all(_closed_by_server(s, HANDSHAKE_SECONDS + 3) for s in flood)
        assert time.monotonic() - started < HANDSHAKE_SECONDS + 3
    finally:
        for sock in flood:
            sock.close()


def test_idle_tls_connections_are_closed(server: MeshcaProcess) -> None:
    context = ssl.create_default_context(cadata=server.bundle_pem.decode())
    context.set_alpn_protocols(["h2"])
    idle = [context.wrap_socket(socket.create_connection(_addr(server, "grpc")),
                                server_hostname="localhost") for _ in range(5)]
    try:
        started = time.monotonic()
        assert all(_closed_by_server(s, IDLE_SECONDS + 4) for s in idle)
        assert time.monotonic() - started >= IDLE_SECONDS - 0.5
    finally:
        for sock in idle:
            sock.close()


def test_total_cap_holds_across_addresses_and_frees_with_the_flood(server: MeshcaProcess) -> None:
    pid = server.process.pid
    before = procnet.open_fds(pid)
    flood: list[socket.socket] = []
    try:
        for n in range(4, 12):  # 8 addresses x 15 = 120 connections against a cap of 60
            flood += _silent(server, "admin", f"127.0.0.{n}", 15)
        held = len(flood) - len(_closed_now(flood, 0.3))
        assert held <= TOTAL
        assert procnet.open_fds(pid) <= before + TOTAL + 5
    finally:
        for sock in flood:
            sock.close()
    assert _wait_until(lambda: AdminClient(server).get("/healthz").status == 200, 10)


def test_idle_tls_connections_cost_little_memory(server: MeshcaProcess) -> None:
    """The review saw 2,000 idle TLS connections take RSS from 130 MB to 792 MB (~330 KB each)."""
    context = ssl.create_default_context(cadata=server.bundle_pem.decode())
    context.set_alpn_protocols(["h2"])
    pid = server.process.pid
    before = procnet.rss_bytes(pid)
    held = []
    try:
        for n in range(50):  # 10 connections from each of 5 addresses, below every cap
            sock = socket.socket()
            sock.bind((f"127.0.1.{n % 5 + 1}", 0))
            sock.connect(_addr(server, "grpc"))
            held.append(context.wrap_socket(sock, server_hostname="localhost"))
        time.sleep(0.3)
        per_connection = (procnet.rss_bytes(pid) - before) / len(held)
    finally:
        for sock in held:
            sock.close()
    assert per_connection < 150 * 1024, f"{per_connection / 1024:.0f} KiB per idle TLS connection"


def test_concurrent_streams_per_connection_are_capped(server: MeshcaProcess) -> None:
    """The server's HTTP/2 SETTINGS announce a finite SETTINGS_MAX_CONCURRENT_STREAMS."""
    context = ssl.create_default_context(cadata=server.bundle_pem.decode())
    context.set_alpn_protocols(["h2"])
    with context.wrap_socket(socket.create_connection(_addr(server, "grpc")),
                             server_hostname="localhost") as tls:
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9)[:3] + b"\x04" + bytes(5))
        data = b""
        while len(data) < 9 or len(data) < 9 + int.from_bytes(data[:3], "big"):
            data += tls.recv(4096)
    length, kind = int.from_bytes(data[:3], "big"), data[3]
    assert kind == 0x4, "the server speaks first with SETTINGS"
    settings = dict(struct.unpack(">HI", data[9 + i:15 + i]) for i in range(0, length, 6))
    assert settings.get(0x3) == 100


def _raw_admin(server: MeshcaProcess, head: bytes, body: bytes = b"") -> bytes:
    context = ssl.create_default_context(cadata=server.bundle_pem.decode())
    with context.wrap_socket(socket.create_connection(_addr(server, "admin")),
                             server_hostname="localhost") as tls:
        tls.sendall(head + body)
        reply = b""
        tls.settimeout(10)
        try:
            while chunk := tls.recv(65536):
                reply += chunk
        except OSError:
            pass
    return reply


def test_oversized_admin_body_is_refused_without_echo(server: MeshcaProcess) -> None:
    """Refused on its Content-Length, before a byte of it is read (a client that waits for
    `100 Continue` or reads while it sends, as curl does, gets the answer)."""
    head = (f"POST /v1/admin-tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
            f"{admin_token(server)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n").encode()
    reply = _raw_admin(server, head, b'{"role": "viewer", "name": "xxxxxxxx')
    status, _, body = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), reply[:200]
    assert str(BODY_LIMIT).encode() in body and len(body) < 1024
    assert b"xxxx" not in reply


def test_oversized_chunked_body_is_refused(server: MeshcaProcess) -> None:
    host, port = _addr(server, "admin")
    context = ssl.create_default_context(cadata=server.bundle_pem.decode())
    with context.wrap_socket(socket.create_connection((host, port)), server_hostname="localhost") as tls:
        tls.sendall(f"POST /v1/authz:evaluate HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
                    f"{admin_token(server)}\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"a" * 16384
        try:
            for _ in range(BODY_LIMIT // len(chunk) + 2):
                tls.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except OSError:
            pass  # the server may close as soon as it has answered
        reply = tls.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_many_validation_errors_are_summarised_not_echoed(server: MeshcaProcess) -> None:
    junk = "z" * 100
    body = {"policies": [{"apiVersion": junk, "kind": junk, "spec": {"action": junk}}] * 150,
            "request": {}}
    response = AdminClient(server).post("/v1/authz:evaluate", body, token=admin_token(server))
    assert response.status == 422
    problem = response.json()
    assert len(problem["errors"]) == 20 and "more)" in problem["detail"]
    assert len(response.body) < 16384 and junk not in response.body.decode()


def test_oversized_admin_head_is_refused(server: MeshcaProcess) -> None:
    response = AdminClient(server).request("GET", "/healthz", authorization="Bearer " + "a" * 20000)
    assert response.status in (400, 431)


def test_token_guessing_backs_off_per_address(server: MeshcaProcess) -> None:
    client = AdminClient(server)
    statuses = [client.get("/v1/ca", token=f"mca_guess{i}").status for i in range(5)]
    assert statuses == [401] * 5
    refused = client.get("/v1/ca", token=admin_token(server))
    assert refused.status == 429, "even a good token waits while its address backs off"
    assert int(refused.headers["retry-after"]) >= 1
    # The back-off doubles with each further failure while it lasts, and ends.
    assert _wait_until(lambda: client.get("/v1/ca", token=admin_token(server)).status == 200, 10)


def test_no_redirect_and_no_host_reflection(server: MeshcaProcess) -> None:
    host, port = _addr(server, "admin")
    context = ssl.create_default_context(cadata=server.bundle_pem.decode())
    with context.wrap_socket(socket.create_connection((host, port)), server_hostname="localhost") as tls:
        tls.sendall(b"GET /v1/ca/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert not reply.startswith(b"HTTP/1.1 3"), reply[:200]
    assert b"evil.example" not in reply and b"http://" not in reply.lower()


@pytest.mark.parametrize("path,token", [("/healthz", None), ("/v1/ca", "admin"), ("/v1/ca", "bad"),
                                        ("/nothing", None)])
def test_every_admin_response_carries_the_security_headers(server: MeshcaProcess, path: str,
                                                           token: str | None) -> None:
    credential = {"admin": admin_token(server), "bad": "mca_not-a-token", None: None}[token]
    response = AdminClient(server).get(path, token=credential)
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


def test_new_admin_token_response_is_not_cacheable(server: MeshcaProcess) -> None:
    response = AdminClient(server).post("/v1/admin-tokens", {"role": "viewer", "name": "no-store"},
                                        token=admin_token(server))
    assert response.status == 201
    assert response.headers["cache-control"] == "no-store"
    assert json.loads(response.body)["token"].startswith("mca_")
