"""Several replicas on one PostgreSQL: one killed under load, and one that loses the database."""

from __future__ import annotations

import base64
import os
import secrets
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url

from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import issued_certificates
from tests.integration.test_ca_replicas import _children_of
from tests.integration.test_ca_rotation import api, eventually
from tests.support import AdminClient, MeshcaProcess, csr_pem, reset_postgres, start_meshca

pytestmark = pytest.mark.postgres


def _replica(tmp_path: Path, name: str, url: str, shared: dict[str, str], *extra: str) -> MeshcaProcess:
    # Sidecars here renew as fast as they can, one identity: no issuance rate limit.
    return start_meshca(tmp_path / name, "--key-dir", str(tmp_path / "keys"),
                        "--ca-reload-interval", "0.5s", "--issuance-rate-per-identity", "off",
                        "--issuance-rate-per-source", "off", *extra, database_url=url, env=shared)


def _sidecar(server: MeshcaProcess, until: float, received: list[tuple[str, str, float]],
             failures: Counter[str]) -> None:
    """Renew again and again over one channel, as a busy node would."""
    channel = grpc.secure_channel(server.grpc_addr, grpc.ssl_channel_credentials(server.bundle_pem),
                                  options=[("grpc.ssl_target_name_override", "localhost")])
    token = server.token()
    try:
        while time.monotonic() < until:
            try:
                chain = server.create_certificate(csr_pem(), token=token, channel=channel)
            except grpc.RpcError as exc:
                failures[exc.code().name] += 1
                time.sleep(0.05)
                continue
            leaf = x509.load_pem_x509_certificate(chain[0].encode())
            received.append((server.data_dir.name, f"{leaf.serial_number:x}", time.monotonic()))
    finally:
        channel.close()


def test_a_replica_killed_under_load_loses_no_record_and_the_survivor_carries_on(
        tmp_path: Path, pg_url: str) -> None:
    reset_postgres(pg_url)
    shared = {"MESHCA_KEK": base64.b64encode(secrets.token_bytes(32)).decode()}
    a = _replica(tmp_path, "a", pg_url, shared)
    b = _replica(tmp_path, "b", pg_url, shared)
    (b.data_dir / "admin-token").write_bytes((a.data_dir / "admin-token").read_bytes())
    received: list[tuple[str, str, float]] = []
    failures: Counter[str] = Counter()
    try:
        until = time.monotonic() + 8
        threads = [threading.Thread(target=_sidecar, args=(server, until, received, failures))
                   for server in (a, b, a, b)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        killed_at = time.monotonic()
        children = _children_of(a.process.pid)
        os.kill(a.process.pid, signal.SIGKILL)
        for child in children:
            os.kill(child, signal.SIGKILL)
        for thread in threads:
            thread.join(30)

        serials = [serial for _, serial, _ in received]
        assert len(serials) == len(set(serials)), "a serial was handed out twice"
        engine = open_engine(pg_url)
        try:
            with engine.connect() as connection:
                recorded = Counter(connection.execute(
                    sql_select(issued_certificates.c.serial)).scalars())
                duplicates = connection.execute(
                    sql_select(issued_certificates.c.serial).group_by(issued_certificates.c.serial)
                    .having(func.count() > 1)).all()
        finally:
            engine.dispose()
        assert duplicates == []
        missing = [s for s in serials if recorded[s] != 1]
        assert missing == [], f"{len(missing)} certificates a client received are not on record"
        before = sum(1 for name, _, at in received if name == "a" and at < killed_at)
        after_b = sum(1 for name, _, at in received if name == "b" and at > killed_at + 0.5)
        assert before > 0 and after_b > 10, (before, after_b, failures)
        assert set(failures) <= {"UNAVAILABLE"}, failures  # only the dead replica's callers

        # The survivor takes the rotation lease for the next step (A died without giving it back
        # only if it was mid-pass; then it expires).
        answer = api(b, "POST", "/v1/ca:prepare", {"kind": "intermediate"}, expect=201)
        assert answer["actions"][0]["action"] == "prepare"
    finally:
        a.stop()
        b.stop()


class _Proxy:
    """A TCP proxy to PostgreSQL that a test can cut and restore (the database 'goes away')."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                # shutdown() wakes the thread blocked in accept(); close() alone would leave
                # the socket listening until that accept returns.
                try:
                    self._listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(one: socket.socket, other: socket.socket) -> None:
        peers = {one: other, other: one}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return


@pytest.fixture
def proxy(pg_url: str) -> Iterator[_Proxy]:
    url = make_url(pg_url)
    proxy = _Proxy((url.host or "127.0.0.1", url.port or 5432))
    yield proxy
    proxy.down()


def test_a_replica_that_loses_the_database_is_not_ready_and_refuses_to_issue(
        tmp_path: Path, pg_url: str, proxy: _Proxy) -> None:
    reset_postgres(pg_url)
    url = make_url(pg_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    server = start_meshca(tmp_path / "data", database_url=url)
    try:
        server.create_certificate(csr_pem())
        assert AdminClient(server).get("/readyz").status == 200
        issued = server.issued_count()

        proxy.down()
        refused = []
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as error:
                server.create_certificate(csr_pem())
            refused.append(error.value.code())
        assert set(refused) == {grpc.StatusCode.UNAVAILABLE}
        assert AdminClient(server).get("/readyz").status == 503

        proxy.up()
        eventually(lambda: AdminClient(server).get("/readyz").status == 200, timeout=20,
                   what="ready again once the database is back")
        server.create_certificate(csr_pem())
        assert server.issued_count() == issued + 1  # nothing issued while it was gone
    finally:
        server.stop()
