"""Vault's Kubernetes auth end to end: OpenBao itself sends the TokenReview, to the suite's
Kubernetes API stand-in (tests/fakes/kube_api.py, HTTPS with its own CA).

OpenBao's `kubernetes` auth method is configured with the stand-in as `kubernetes_host`, its CA
and a reviewer token; meshca logs in with a projected service-account token (audience
`vault`) minted by the stand-in. What the stand-in received is asserted there.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac.exceptions
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from meshca.core.keys import KeyType
from meshca.infra.vault import KubernetesAuth, TransitKeys, VaultConnection, VaultSession
from tests.fakes.kube_api import FakeKubeApi
from tests.integration.test_ca_rotation import issue
from tests.support import start_meshca
from tests.vault.bao import BaoServer, new_namespace, shipped_policy

pytestmark = pytest.mark.bao
NS, SA = "meshca-system", "meshca"
REVIEWS = ("POST", "tokenreviews")


@dataclass
class KubeAuthSetup:
    bao: BaoServer
    kube: FakeKubeApi
    namespace: str  # OpenBao's
    token_file: Path

    def mint(self, pod: str, audiences: tuple[str, ...] = ("vault",)) -> str:
        return self.kube.mint(NS, SA, audiences=audiences, pod=pod)

    def session(self) -> VaultSession:
        return VaultSession(VaultConnection(self.bao.addr, self.bao.ca_cert, self.namespace),
                            KubernetesAuth("meshca", jwt_file=self.token_file))

    def meshca_flags(self) -> list[str]:
        return ["--keystore", "vault-transit", "--vault-addr", self.bao.addr,
                "--vault-ca-cert", str(self.bao.ca_cert), "--vault-namespace", self.namespace,
                "--vault-auth", "kubernetes", "--vault-role", "meshca",
                "--vault-kube-token-file", str(self.token_file)]


@pytest.fixture
def setup(bao: BaoServer, tmp_path: Path) -> Iterator[KubeAuthSetup]:
    with FakeKubeApi() as kube:
        kube.add_service_account(NS, SA)
        kube.add_pod(NS, "meshca-0", service_account=SA, node="node-a")
        namespace = new_namespace(bao)
        admin = bao.client(namespace=namespace)
        admin.sys.enable_secrets_engine("transit", path="transit")
        admin.sys.create_or_update_policy("meshca", shipped_policy("transit"))
        admin.sys.enable_auth_method("kubernetes")
        # As docs/vault.md says for a Vault outside the cluster: the API server's address and
        # CA, and a token allowed to create TokenReviews (system:auth-delegator).
        admin.write_data("auth/kubernetes/config", data={
            "kubernetes_host": kube.url, "kubernetes_ca_cert": kube.ca_pem,
            "token_reviewer_jwt": kube.client_token, "disable_local_ca_jwt": True})
        admin.write_data("auth/kubernetes/role/meshca", data={
            "bound_service_account_names": SA, "bound_service_account_namespaces": NS,
            "audience": "vault", "token_policies": "meshca", "token_ttl": "1h"})
        token_file = tmp_path / "vault-token"
        token_file.write_text(kube.mint(NS, SA, audiences=["vault"], pod="meshca-0"))
        yield KubeAuthSetup(bao, kube, namespace, token_file)


def test_openbao_reviews_meshcas_projected_token_at_the_kubernetes_api(setup: KubeAuthSetup) -> None:
    setup.kube.reset_calls()
    session = setup.session()
    signer = TransitKeys(session).create("root-k1", KeyType.EC_P256)
    assert setup.kube.calls[REVIEWS] == 1  # OpenBao asked the stand-in, once, at login
    assert session.logins == 1
    assert isinstance(signer.public_key, ec.EllipticCurvePublicKey)
    signer.public_key.verify(signer.sign(b"tbs"), b"tbs", ec.ECDSA(hashes.SHA256()))
    lookup = setup.bao.client(token=session.call("t", lambda c: c.token),
                              namespace=setup.namespace).auth.token.lookup_self()["data"]
    assert lookup["meta"]["service_account_name"] == SA
    assert lookup["meta"]["service_account_namespace"] == NS
    assert "meshca" in lookup["policies"]


def test_a_rotated_projected_token_is_read_at_the_next_login(setup: KubeAuthSetup) -> None:
    session = setup.session()
    signer = TransitKeys(session).create("root-k2", KeyType.EC_P256)
    old = setup.token_file.read_text()
    # The pod is replaced: its token dies with it, and the kubelet writes the new pod's token.
    setup.kube.delete_pod(NS, "meshca-0")
    setup.kube.add_pod(NS, "meshca-1", service_account=SA, node="node-a")
    setup.token_file.write_text(setup.mint("meshca-1"))
    setup.bao.client(namespace=setup.namespace).auth.token.revoke(session.call("t", lambda c: c.token))
    setup.kube.reset_calls()
    signer.sign(b"after rotation")  # 403, log in again with the file's new token, retry
    assert session.logins == 2
    assert setup.kube.calls[REVIEWS] == 1
    # The old token would not have done: the stand-in refuses it now, and so does OpenBao.
    with pytest.raises(hvac.exceptions.Forbidden):
        setup.bao.client(namespace=setup.namespace).auth.kubernetes.login("meshca", old)
    assert setup.kube.calls[REVIEWS] == 2


def test_meshca_serves_with_its_root_in_transit_logged_in_by_kubernetes_auth(
        setup: KubeAuthSetup, tmp_path: Path) -> None:
    setup.kube.reset_calls()
    server = start_meshca(tmp_path / "data", *setup.meshca_flags())
    try:
        chain = issue(server)
        assert len(chain) >= 2
        assert setup.kube.calls[REVIEWS] >= 1
        keys = setup.bao.client(namespace=setup.namespace).secrets.transit.list_keys()["data"]["keys"]
        assert any(name.startswith("root-") for name in keys)
    finally:
        server.stop()


@pytest.mark.parametrize("refusal", ["wrong audience", "service account deleted"])
def test_a_refused_token_stops_start_up_with_one_line_and_exit_2(
        setup: KubeAuthSetup, tmp_path: Path, refusal: str) -> None:
    if refusal == "wrong audience":
        setup.token_file.write_text(setup.mint("meshca-0", audiences=("istio-ca",)))
    else:
        setup.kube.delete_service_account(NS, SA)
    setup.kube.reset_calls()
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "meshca", "serve", "--data-dir", str(data),
         "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
         "--ext-authz-addr", "off", *setup.meshca_flags()],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("meshca:")]
    assert len(lines) == 1, result.stderr
    assert "Vault refused meshca's kubernetes login" in lines[0]
    assert "Traceback" not in result.stderr
    assert setup.token_file.read_text() not in result.stderr
    assert not (data / "endpoints.json").exists()
    if refusal == "service account deleted":  # only a review can tell: it reached the stand-in
        assert setup.kube.calls[REVIEWS] == 1
