"""Vault's PKI engine as the authority above meshca (`--upstream vault-pki`), on a real OpenBao.

meshca keeps each intermediate's key; OpenBao's issuer signs its CSR; the bundle is OpenBao's
root. Chains are checked with `openssl verify -x509_strict` and with `x509.verification`, each
trusting only the root read from OpenBao's own API. OpenBao rotating its issuer shows up in
meshca's bundle, and meshca follows it. An unreachable OpenBao delays rotation only.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from meshca.core.keys import KeyType
from meshca.core.remote_signing import SignerUnavailable
from meshca.core.rotation import Kind, RotationPolicy, State
from meshca.infra.vault import TokenAuth, VaultConnection, VaultPkiUpstream, VaultSession
from meshca.service.ca_lifecycle import CaLifecycle, LifecycleProfile
from meshca.service.ca_setup import load_signing_authority
from tests.fakes.ca_journal import FakeCaJournal
from tests.fakes.clock import FakeClock
from tests.fakes.keys import FakeKeyBackend
from tests.integration.test_ca_rotation import api, bundle_roots, eventually, issue, metrics
from tests.support import AdminClient, admin_token, start_meshca
from tests.vault.bao import BaoServer, new_namespace, shipped_policy
from tests.vault.chains import openssl_verify, path_to_root

pytestmark = pytest.mark.bao
TRUST_DOMAIN = "cluster.local"
SHORT = RotationPolicy(refresh_hint=timedelta(seconds=1), publish_lead=timedelta(seconds=2))


@dataclass
class Pki:
    bao: BaoServer
    namespace: str
    token: str

    @property
    def admin(self) -> Any:
        return self.bao.client(namespace=self.namespace)

    def root(self) -> x509.Certificate:
        """The default issuer's certificate, as OpenBao's API gives it to anyone."""
        anonymous = self.bao.client(token="", namespace=self.namespace)
        data = anonymous.adapter.get("/v1/pki/issuer/default/json")["data"]
        return x509.load_pem_x509_certificate(data["certificate"].encode())

    def rotate_issuer(self, name: str) -> str:
        """A new root in OpenBao, made its default issuer (OpenBao's own rotation)."""
        made = self.admin.write_data("pki/root/rotate/internal", data={
            "common_name": f"corp root {name}", "issuer_name": name, "ttl": "8760h", "key_type": "ec"})
        self.admin.write_data("pki/root/replace", data={"default": name})
        issuer_id: str = made["data"]["issuer_id"]
        return issuer_id

    def session(self, addr: str | None = None) -> VaultSession:
        return VaultSession(VaultConnection(addr or self.bao.addr, self.bao.ca_cert, self.namespace,
                                            timeout=2), TokenAuth(token=self.token))

    def flags(self, addr: str | None = None) -> list[str]:
        return ["--upstream", "vault-pki", "--vault-addr", addr or self.bao.addr,
                "--vault-ca-cert", str(self.bao.ca_cert), "--vault-namespace", self.namespace]


@pytest.fixture
def pki(bao: BaoServer) -> Pki:
    namespace = new_namespace(bao)
    admin = bao.client(namespace=namespace)
    admin.sys.enable_secrets_engine("pki", path="pki", config={"max_lease_ttl": "87600h"})
    admin.write_data("pki/root/generate/internal", data={
        "common_name": "corp root g1", "issuer_name": "g1", "ttl": "8760h", "key_type": "ec"})
    admin.sys.create_or_update_policy("meshca", shipped_policy("pki"))
    token: str = admin.auth.token.create(policies=["meshca"], ttl="1h")["auth"]["client_token"]
    return Pki(bao, namespace, token)


def lifecycle(pki: Pki, clock: FakeClock, journal: FakeCaJournal, keys: FakeKeyBackend, *,
              addr: str | None = None) -> CaLifecycle:
    profile = LifecycleProfile(key_type=KeyType.EC_P256, trust_domain=TRUST_DOMAIN, organization="meshca",
                               root_ttl=timedelta(days=365), intermediate_ttl=timedelta(days=7))
    return CaLifecycle(journal, keys, profile, SHORT, clock,
                       upstream=VaultPkiUpstream(pki.session(addr), "pki"))


def rows(journal: FakeCaJournal, kind: Kind) -> list[Any]:
    generations, _ = journal.snapshot()
    return [journal.row(g.id) for g in generations if g.kind is kind]


def cert_of(row: Any) -> x509.Certificate:
    return x509.load_pem_x509_certificate(row.certificate_pem.encode())


# --- the lifecycle over the real PKI engine ----------------------------------------------------

@pytest.mark.parametrize("remote", [False, True], ids=["local-key", "remote-key"])
def test_bootstrap_records_openbaos_root_and_has_it_sign_meshcas_intermediate(
        pki: Pki, remote: bool) -> None:
    clock, journal = FakeClock(datetime.now(UTC)), FakeCaJournal()
    # remote: the intermediate's key is made in a signing service (as in Transit), so its CSR
    # is signed through the `Signer` port, not by cryptography.
    keys = FakeKeyBackend(remote_kinds=frozenset({"intermediate"}) if remote else frozenset())
    done = lifecycle(pki, clock, journal, keys).run_due(None)
    assert [type(a).__name__ for a in done] == ["Prepare", "Activate", "Prepare", "Activate", "Prepare",
                                                "Activate"]  # root, intermediate, JWT key
    [root_row] = rows(journal, Kind.ROOT)
    [inter_row] = rows(journal, Kind.INTERMEDIATE)
    vault_root = pki.root()
    issuer_id = pki.admin.read("pki/config/issuers")["data"]["default"]
    assert root_row.key_location == f"vault-pki:pki/issuer/{issuer_id}"
    assert cert_of(root_row) == vault_root
    intermediate = cert_of(inter_row)
    intermediate.verify_directly_issued_by(vault_root)
    sans = intermediate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TRUST_DOMAIN}"]
    assert inter_row.key_location.startswith("remote:" if remote else "memory:")
    assert openssl_verify([vault_root], [], intermediate).returncode == 0
    authority = load_signing_authority(journal, keys)
    assert list(authority.bundle.roots) == [vault_root]
    assert authority.certificate == intermediate


def test_openbao_rotating_its_issuer_shows_in_the_bundle_then_meshca_follows(pki: Pki) -> None:
    clock, journal = FakeClock(datetime.now(UTC)), FakeCaJournal()
    life = lifecycle(pki, clock, journal, FakeKeyBackend())
    life.run_due(None)
    old_root = pki.root()
    pki.rotate_issuer("g2")
    new_root = pki.root()
    assert new_root != old_root

    done = life.run_due(None)  # seen: published at once, not signing before publish_lead
    assert [type(a).__name__ for a in done] == ["Prepare"]
    generations, published = journal.snapshot()
    roots = {journal.row(g.id).certificate_pem: g for g in generations if g.kind is Kind.ROOT}
    assert {g.id for g in roots.values()} <= published
    assert [cert_of(journal.row(g.id)) for g in roots.values() if g.state is State.PREPARED] == [new_root]

    clock.advance(SHORT.publish_lead)
    done = life.run_due(None)
    assert ("Activate", Kind.ROOT) in [(type(a).__name__, getattr(a, "kind", None)) for a in done]
    active = [journal.row(g.id) for g in journal.snapshot()[0] if g.state is State.ACTIVE]
    intermediate = next(cert_of(r) for r in active if r.kind == "intermediate")
    assert intermediate.issuer == new_root.subject  # re-signed by OpenBao's new issuer
    assert openssl_verify([new_root], [], intermediate).returncode == 0
    assert openssl_verify([old_root], [], intermediate).returncode != 0


def test_an_operator_prepare_without_a_new_issuer_is_a_conflict(pki: Pki) -> None:
    from meshca.core.rotation import Prepare, Reason
    from meshca.errors import Conflict

    clock, journal = FakeClock(datetime.now(UTC)), FakeCaJournal()
    life = lifecycle(pki, clock, journal, FakeKeyBackend())
    life.run_due(None)
    with pytest.raises(Conflict, match="rotate the upstream's issuer first"):
        life.apply(Prepare(Kind.ROOT, None, Reason.SCHEDULED), None)


def test_an_unreachable_openbao_delays_rotation_and_leaves_the_ca_signing(pki: Pki) -> None:
    clock, journal, keys = FakeClock(datetime.now(UTC)), FakeCaJournal(), FakeKeyBackend()
    lifecycle(pki, clock, journal, keys).run_due(None)
    before = journal.snapshot()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{closed.getsockname()[1]}"
    away = lifecycle(pki, clock, journal, keys, addr=dead)
    clock.advance(timedelta(days=7) * 5 / 6)  # the intermediate is due for replacement
    with pytest.raises(SignerUnavailable, match="cannot reach Vault"):
        away.run_due(None)
    assert away.upstream_error is not None
    assert [g.id for g in journal.snapshot()[0]] == [g.id for g in before[0]]  # nothing half-made
    assert load_signing_authority(journal, keys).certificate == cert_of(rows(journal, Kind.INTERMEDIATE)[0])


# --- meshca serving under OpenBao's PKI ---------------------------------------------------------

class Link:
    """A TCP forwarder in front of OpenBao, to cut meshca off (and only meshca)."""

    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("https://").rpartition(":")
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self.up = True
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.up = False
        for conn in self._open:
            conn.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self._target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.cut()
        self._listener.close()


@pytest.fixture
def link(pki: Pki) -> Iterator[Link]:
    forwarder = Link(pki.bao.addr)
    yield forwarder
    forwarder.close()


def test_meshca_serves_chains_to_openbaos_root_and_follows_its_rotation(
        pki: Pki, link: Link, tmp_path: Path) -> None:
    token_file = tmp_path / "vault-token"
    token_file.write_text(pki.token)
    server = start_meshca(tmp_path / "data", *pki.flags(link.addr), "--vault-token-file", str(token_file),
                          "--bundle-refresh-hint", "1s", "--bundle-publish-lead", "2s")
    try:
        leaf, intermediate = issue(server)
        vault_root = pki.root()
        assert bundle_roots(server) == [vault_root]
        checked = openssl_verify([vault_root], [intermediate], leaf)
        assert checked.returncode == 0, checked.stderr
        assert path_to_root([vault_root], [intermediate], leaf) == [leaf, intermediate, vault_root]

        # OpenBao rotates its issuer; the operator tells meshca at once (else: its next pass).
        pki.rotate_issuer("g2")
        new_root = pki.root()
        api(server, "POST", "/v1/ca:prepare", {"kind": "root"}, expect=201)
        eventually(lambda: set(bundle_roots(server)) == {vault_root, new_root},
                   what="OpenBao's new root in meshca's bundle, beside the old one")
        def under_new_root() -> list[x509.Certificate] | None:
            chain = issue(server)
            return chain if chain[1].issuer == new_root.subject else None

        chain = eventually(under_new_root, timeout=30, what="an intermediate signed by OpenBao's new issuer")
        assert openssl_verify([new_root], [chain[1]], chain[0]).returncode == 0
        assert path_to_root([new_root], [chain[1]], chain[0])[-1] == new_root

        # OpenBao out of reach: issuance goes on under the valid intermediate; rotation waits.
        link.cut()
        for _ in range(3):
            issue(server)
        refused = AdminClient(server).post("/v1/ca:prepare", {"kind": "intermediate"},
                                           token=admin_token(server))
        assert refused.status == 503, refused.body
        assert eventually(lambda: metrics(server).get(("meshca_vault_alert", frozenset())) == 1.0,
                          timeout=60, what="the Vault alert")
        assert AdminClient(server).get("/readyz").status == 200
    finally:
        server.stop()
