"""`meshca agent --attestor kubernetes` end to end: the caller's pid (this test process) →
its cgroup in a prepared proc tree (`--proc-root`) → the pod in an in-test kubelet over HTTPS →
the pod's service account, signed by a real `meshca serve`, fetched by py-spiffe."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from spiffe import WorkloadApiClient

from tests.agent.agent_process import TRUSTED_AGENT, AgentProcess, cleanup, public_dir, start_agent
from tests.fakes.kubelet import FakeKubelet
from tests.support import MeshcaProcess, start_meshca

POD_UID = "7d0c4bd2-8a6e-4c5e-9b1e-3f1d2a6c9e01"
CONTAINER = "4f1c8e2b9a7d6c5e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
CART = "spiffe://cluster.local/ns/shop/sa/cart"


def prepare_proc(root: Path) -> None:
    """This process as the agent will look it up: its real stat (start time) and the cgroup of
    a containerd container of a burstable pod under the systemd driver."""
    mine = root / str(os.getpid())
    mine.mkdir(parents=True)
    (mine / "stat").write_text(Path("/proc/self/stat").read_text())
    slice_ = f"kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice"
    (mine / "cgroup").write_text(
        f"0::/kubepods.slice/kubepods-burstable.slice/{slice_}/cri-containerd-{CONTAINER}.scope\n")


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[tuple[MeshcaProcess, FakeKubelet, AgentProcess]]:
    directory = public_dir()
    server = agent = None
    try:
        server = start_meshca(tmp_path / "data", *TRUSTED_AGENT)
        token = directory / "agent-token"
        token.write_text(server.token("kube-system", "meshca-agent", ttl_seconds=3600))
        # The kubelet checks a token of the API server's audience, not the one meshca accepts.
        kubelet_token = directory / "kubelet-token"
        kubelet_token.write_text(server.token("kube-system", "meshca-agent", ttl_seconds=3600,
                                              audiences=["https://kubernetes.default.svc"]))
        with FakeKubelet(token=kubelet_token.read_text()) as kubelet:
            kubelet.add_pod("shop", "cart-5d9f", POD_UID, service_account="cart",
                            containers=(CONTAINER,))
            prepare_proc(directory / "proc")
            kubelet_ca = kubelet.write_ca(directory / "kubelet-ca.pem")
            agent = start_agent(
                server, directory, "--attestor", "kubernetes", "--proc-root", str(directory / "proc"),
                "--kubelet-url", kubelet.url, "--kubelet-ca", str(kubelet_ca),
                "--kubelet-token-file", str(kubelet_token), "--attestation-wait", "1s",
                token_file=token)
            yield server, kubelet, agent
    finally:
        cleanup(directory, agent, server)


def fetch(agent: AgentProcess) -> str:
    with WorkloadApiClient(socket_path=agent.endpoint, default_timeout=20) as client:
        return str(client.fetch_x509_svid().spiffe_id)


def test_the_pods_service_account_is_the_callers_identity(
        node: tuple[MeshcaProcess, FakeKubelet, AgentProcess]) -> None:
    _, kubelet, agent = node
    assert fetch(agent) == CART
    assert kubelet.requests >= 1
    assert agent.metric("meshca_agent_attestations_total", attestor="kubernetes", outcome="ok") == 1


def test_a_pod_the_kubelet_no_longer_runs_gets_no_identity(
        node: tuple[MeshcaProcess, FakeKubelet, AgentProcess]) -> None:
    _, kubelet, agent = node
    kubelet.remove_pod(POD_UID)
    with pytest.raises(Exception, match=r"(?i)permission"):
        fetch(agent)
    assert agent.metric("meshca_agent_attestations_total", attestor="kubernetes",
                        outcome="no_identity") == 1


def test_a_kubelet_that_is_down_makes_new_callers_wait_boundedly_then_recovers(
        node: tuple[MeshcaProcess, FakeKubelet, AgentProcess]) -> None:
    _, kubelet, agent = node
    kubelet.fail_with = 503
    started = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)unavailable"):
        fetch(agent)
    assert time.monotonic() - started < 15  # --attestation-wait 1s, then UNAVAILABLE
    assert agent.metric("meshca_agent_attestations_total", attestor="kubernetes",
                        outcome="unavailable") >= 1
    kubelet.fail_with = None
    assert fetch(agent) == CART
