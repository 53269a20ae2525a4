"""Workload attestation: cgroup layouts, the proc tree, the kubelet's pod list over HTTPS, the
unix and kubernetes attestors, and a pid that exits or is reused mid-attestation."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshca.agent.attestation.cgroups import CgroupError, PodContainer, pod_container
from meshca.agent.attestation.kubelet import KubeletError, KubeletPods, pods_from_list, token_from_file
from meshca.agent.attestation.kubernetes import KubernetesAttestor
from meshca.agent.attestation.ports import AttestationRefused, Caller, PodInfo, ProcessTable
from meshca.agent.attestation.proc import ProcFs, parse_start_time
from meshca.agent.attestation.unix import UnixAttestor, parse_entries, parse_entry
from meshca.agent.unix_front import peer_credentials
from meshca.core.spiffe import SpiffeId
from meshca.errors import ConfigurationError, DependencyError, PermissionDenied
from tests.fakes.kubelet import FakeKubelet
from tests.fakes.processes import FakeProcessTable

TD = "cluster.local"
UID = "2c48913c-b29f-11e7-9350-020968147796"
UID_ = UID.replace("-", "_")
CID = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
OTHER_UID = "74c13223-5a00-11e9-b385-42010a80018d"
OTHER_CID = "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376"
STATIC_UID = "8d5f8c6b3a5e4b4c9e2f1a0b9c8d7e6f"

V1_CONTROLLERS = ("pids", "hugetlb", "net_cls,net_prio", "perf_event", "memory", "freezer",
                  "cpuset", "devices", "blkio", "cpu,cpuacct", "name=systemd")


def v1(path: str, unified: str | None = "/") -> str:
    """A cgroup v1 file: one line per hierarchy, the hybrid unified line last."""
    lines = [f"{len(V1_CONTROLLERS) - i}:{c}:{path}" for i, c in enumerate(V1_CONTROLLERS)]
    if unified is not None:
        lines.append(f"0::{unified}")
    return "\n".join(lines) + "\n"


def v2(path: str) -> str:
    return f"0::{path}\n"


OTHER_V1_LINE = f"1:name=systemd:/kubepods/pod{OTHER_UID}/{OTHER_CID}\n"
SYSTEMD_BURSTABLE = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"

# --- cgroups.py ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    pytest.param(v1(f"/kubepods/burstable/pod{UID}/{CID}"), id="v1-cgroupfs-burstable"),
    pytest.param(v1(f"/kubepods/pod{UID}/{CID}", unified=None), id="v1-cgroupfs-guaranteed"),
    pytest.param(v1(f"{SYSTEMD_BURSTABLE}/cri-containerd-{CID}.scope"), id="v1-systemd-containerd"),
    pytest.param(v1(f"{SYSTEMD_BURSTABLE}/crio-{CID}.scope"), id="v1-systemd-crio"),
    pytest.param(v1(f"{SYSTEMD_BURSTABLE}/docker-{CID}.scope"), id="v1-systemd-docker"),
    pytest.param(v2(f"{SYSTEMD_BURSTABLE}/cri-containerd-{CID}.scope"), id="v2-systemd-containerd"),
    pytest.param(v2(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
                    f"crio-{CID}.scope"), id="v2-systemd-crio-besteffort"),
    pytest.param(v2(f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"),
                 id="v2-systemd-guaranteed"),
    pytest.param(v2(f"/kubepods/besteffort/pod{UID}/{CID}"), id="v2-cgroupfs"),
    pytest.param(v2(f"/../../kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope"),
                 id="v2-seen-from-another-cgroup-namespace"),
    pytest.param(v2(f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
                    f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"),
                 id="v2-kind-nested-kubelet-slice"),
])
def test_pod_and_container_from_every_layout(text: str) -> None:
    assert pod_container(text) == PodContainer(UID, CID)


def test_static_pod_hash_uid() -> None:
    assert pod_container(v2(f"/kubepods/burstable/pod{STATIC_UID}/{CID}")) == PodContainer(STATIC_UID, CID)


@pytest.mark.parametrize("text", [
    pytest.param(v2("/system.slice/containerd.service"), id="v2-system-service"),
    pytest.param(v2("/user.slice/user-1000.slice/session-3.scope"), id="v2-login-session"),
    pytest.param(v2("/"), id="v2-root"),
    pytest.param(v1("/user.slice/user-1000.slice/session-3.scope"), id="v1-login-session"),
    pytest.param("", id="empty"),
    pytest.param(v2(SYSTEMD_BURSTABLE), id="pod-cgroup-but-no-container"),
    pytest.param(v2(f"{SYSTEMD_BURSTABLE}/crio-conmon-{CID}.scope"), id="crio-conmon-helper"),
    pytest.param(v2(f"/kubepods/burstable/pod{UID}"), id="cgroupfs-pod-level"),
    pytest.param(v2(f"/kubepods/burstable/pod{UID}/{CID}/extra"), id="below-the-container"),
    pytest.param(v2(f"/elsewhere/pod{UID}/{CID}"), id="cgroupfs-shape-outside-kubepods"),
    pytest.param(v2(f"/kubepods/burstable/pod{UID}/{CID.upper()}"), id="not-lower-hex"),
    pytest.param(v2(f"/kubepods/burstable/pod{UID}/{CID[:-1]}"), id="short-container-id"),
    pytest.param(v2(f"{SYSTEMD_BURSTABLE}/runc-{CID}.scope"), id="unknown-runtime-prefix"),
])
def test_non_pod_processes_have_no_pod(text: str) -> None:
    assert pod_container(text) is None


def test_hierarchies_that_disagree_are_refused() -> None:
    text = v2(f"/kubepods/burstable/pod{UID}/{CID}") + OTHER_V1_LINE
    with pytest.raises(CgroupError, match="different pods"):
        pod_container(text)


def test_a_line_that_is_not_a_cgroup_line_is_refused() -> None:
    with pytest.raises(CgroupError, match="not a cgroup line"):
        pod_container("garbage\n")


# --- proc.py ------------------------------------------------------------------------------------

def stat_line(pid: int, start: int, comm: str = "app") -> str:
    return f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start} 1000000 200\n"


def make_proc(root: Path, pid: int, cgroup: str, start: int) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(stat_line(pid, start))
    (d / "cgroup").write_text(cgroup)


def test_start_time_is_field_22_even_with_parentheses_in_comm() -> None:
    assert parse_start_time(stat_line(7, 123456, comm="a) (b c) S 9")) == 123456
    assert parse_start_time("7 (short) S 1 2") is None
    assert parse_start_time("no parenthesis") is None


def test_procfs_reads_a_prepared_tree(tmp_path: Path) -> None:
    make_proc(tmp_path, 42, v2(f"/kubepods/burstable/pod{UID}/{CID}"), 5555)
    procs = ProcFs(tmp_path)
    assert procs.start_time(42) == 5555
    assert procs.cgroup(42) == v2(f"/kubepods/burstable/pod{UID}/{CID}")
    assert procs.start_time(43) is None and procs.cgroup(43) is None
    assert procs.start_time(0) is None and procs.start_time(-1) is None


def test_procfs_reads_this_process_from_the_real_proc() -> None:
    procs = ProcFs("/proc")
    started = procs.start_time(os.getpid())
    assert started is not None and started > 0
    assert procs.cgroup(os.getpid())


@pytest.fixture(params=["procfs", "fake"])
def process_table(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ProcessTable, Callable[..., None]]:
    """The adapter and its fake, each with a way to start a process, for one contract."""
    if request.param == "procfs":
        return ProcFs(tmp_path), lambda pid, cgroup, start: make_proc(tmp_path, pid, cgroup, start)
    fake = FakeProcessTable()
    return fake, lambda pid, cgroup, start: fake.spawn(pid, cgroup, start)


def test_process_table_contract(process_table: tuple[ProcessTable, Callable[..., None]]) -> None:
    table, spawn = process_table
    spawn(42, v2("/"), 10)
    assert (table.start_time(42), table.cgroup(42)) == (10, v2("/"))
    assert (table.start_time(43), table.cgroup(43)) == (None, None)
    spawn(42, v2("/other"), 11)  # the pid reused
    assert (table.start_time(42), table.cgroup(42)) == (11, v2("/other"))


# --- kubelet.py ---------------------------------------------------------------------------------

@pytest.fixture
def kubelet() -> Iterator[FakeKubelet]:
    with FakeKubelet() as fake:
        fake.add_pod("shop", "cart-1", UID, service_account="cart", containers=(CID,))
        fake.add_pod("web", "front-1", OTHER_UID, service_account="front", containers=(OTHER_CID,),
                     runtime="cri-o")
        yield fake


def client(kubelet: FakeKubelet, tmp_path: Path, *, token: str | None = None) -> KubeletPods:
    return KubeletPods(lambda: token or kubelet.token, url=kubelet.url,
                       ca_file=kubelet.write_ca(tmp_path / "kubelet-ca.pem"))


def test_kubelet_pods_by_uid_over_https(kubelet: FakeKubelet, tmp_path: Path) -> None:
    pods = client(kubelet, tmp_path)
    assert pods.pod(UID) == PodInfo("shop", "cart", "cart-1", UID, frozenset({CID}))
    assert pods.pod(OTHER_UID) == PodInfo("web", "front", "front-1", OTHER_UID, frozenset({OTHER_CID}))
    assert pods.pod("00000000-0000-0000-0000-000000000000") is None


def test_kubelet_token_is_read_from_its_file_each_time(kubelet: FakeKubelet, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old\n")
    pods = KubeletPods(token_from_file(token_file), url=kubelet.url,
                       ca_file=kubelet.write_ca(tmp_path / "ca.pem"))
    with pytest.raises(KubeletError, match="refused the agent's token"):
        pods.pod(UID)
    token_file.write_text(kubelet.token + "\n")  # the projected token was rotated
    assert pods.pod(UID) is not None
    token_file.unlink()
    with pytest.raises(KubeletError, match="cannot read the agent's token file"):
        pods.pod(UID)


def test_kubelet_refusing_the_token_is_a_dependency_error_without_the_token(
    kubelet: FakeKubelet, tmp_path: Path
) -> None:
    with pytest.raises(DependencyError, match="HTTP 401") as caught:
        client(kubelet, tmp_path, token="s3cret-wrong").pod(UID)
    assert "s3cret" not in str(caught.value)


def test_kubelet_server_error(kubelet: FakeKubelet, tmp_path: Path) -> None:
    kubelet.fail_with = 500
    with pytest.raises(KubeletError, match="HTTP 500"):
        client(kubelet, tmp_path).pod(UID)


def test_kubelet_with_a_certificate_from_another_ca_is_refused(kubelet: FakeKubelet, tmp_path: Path) -> None:
    with FakeKubelet() as other:
        pods = KubeletPods(lambda: kubelet.token, url=kubelet.url,
                           ca_file=other.write_ca(tmp_path / "other-ca.pem"))
        with pytest.raises(KubeletError, match="CERTIFICATE_VERIFY_FAILED"):
            pods.pod(UID)
    assert kubelet.requests == 0


def test_kubelet_insecure_is_explicit(kubelet: FakeKubelet) -> None:
    pods = KubeletPods(lambda: kubelet.token, url=kubelet.url, insecure=True)
    assert pods.pod(UID) is not None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"url": "http://127.0.0.1:10250/pods", "insecure": True}, "https://"),
    ({}, "CA is needed"),
    ({"ca_file": "/x.pem", "insecure": True}, "not both"),
    ({"insecure": True, "timeout": 0}, "positive"),
])
def test_kubelet_settings_are_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KubeletPods(lambda: "t", **kwargs)  # type: ignore[arg-type]


def test_kubelet_down_is_a_dependency_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with pytest.raises(KubeletError, match="cannot be asked"):
        KubeletPods(lambda: "t", url=f"https://127.0.0.1:{port}/pods", insecure=True).pod(UID)


def test_kubelet_that_never_answers_is_bounded_by_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(KubeletError, match=r"timed out|Timeout"):
            KubeletPods(lambda: "t", url=f"https://127.0.0.1:{port}/pods", insecure=True,
                        timeout=0.3).pod(UID)
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("doc", [[], {"kind": "Status"}, {"items": {}}, "x"])
def test_an_answer_that_is_not_a_pod_list_is_refused(doc: object) -> None:
    with pytest.raises(KubeletError, match="not a PodList"):
        pods_from_list(doc)


def test_pods_without_a_service_account_or_name_give_no_pod() -> None:
    doc = {"items": [
        {"metadata": {"name": "static", "namespace": "kube-system", "uid": STATIC_UID}, "spec": {}},
        {"metadata": {"namespace": "a", "uid": UID}, "spec": {"serviceAccountName": "x"}},
        "junk",
        {"metadata": {"name": "ok", "namespace": "a", "uid": OTHER_UID}, "spec": {"serviceAccountName": "x"},
         "status": {"initContainerStatuses": [{"containerID": f"containerd://{CID}"}],
                    "containerStatuses": [{"name": "waiting"}, {"containerID": ""}]}},
    ]}
    assert pods_from_list(doc) == [PodInfo("a", "x", "ok", OTHER_UID, frozenset({CID}))]


# --- kubernetes attestor -------------------------------------------------------------------------

CART = SpiffeId.parse(f"spiffe://{TD}/ns/shop/sa/cart")


def test_kubernetes_attestor_from_a_proc_tree_and_the_kubelet(kubelet: FakeKubelet, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    make_proc(proc, 100, v1(f"{SYSTEMD_BURSTABLE}/cri-containerd-{CID}.scope"), 777)
    make_proc(proc, 200, v2(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
                            f"{OTHER_UID.replace('-', '_')}.slice/crio-{OTHER_CID}.scope"), 888)
    make_proc(proc, 300, v2("/system.slice/sshd.service"), 999)
    make_proc(proc, 400, v2(f"/kubepods/burstable/pod{UID}/{OTHER_CID}"), 999)  # not cart's container
    gone = "11111111-2222-3333-4444-555555555555"
    make_proc(proc, 500, v2(f"/kubepods/burstable/pod{gone}/{CID}"), 999)  # no such pod
    attestor = KubernetesAttestor(TD, ProcFs(proc), client(kubelet, tmp_path))
    assert attestor.attest(Caller(100, 1000, 1000)) == (CART,)
    assert attestor.attest(Caller(200, 0, 0)) == (SpiffeId.parse(f"spiffe://{TD}/ns/web/sa/front"),)
    assert attestor.attest(Caller(300, 0, 0)) == ()
    assert attestor.attest(Caller(400, 0, 0)) == ()
    assert attestor.attest(Caller(500, 0, 0)) == ()
    with pytest.raises(AttestationRefused, match="exited before"):
        attestor.attest(Caller(600, 0, 0))


def test_pid_that_exits_during_the_kubelet_look_up_is_refused(kubelet: FakeKubelet, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    make_proc(proc, 100, v2(f"/kubepods/burstable/pod{UID}/{CID}"), 777)

    def exit_process() -> None:
        for p in (proc / "100").iterdir():
            p.unlink()
        (proc / "100").rmdir()

    kubelet.before_answer = exit_process
    attestor = KubernetesAttestor(TD, ProcFs(proc), client(kubelet, tmp_path))
    with pytest.raises(AttestationRefused, match="exited or was replaced"):
        attestor.attest(Caller(100, 0, 0))


def test_pid_reused_during_the_kubelet_look_up_is_refused(kubelet: FakeKubelet, tmp_path: Path) -> None:
    # The victim in cart's pod exits; an attacker outside any pod gets its pid.
    proc = tmp_path / "proc"
    make_proc(proc, 100, v2(f"/kubepods/burstable/pod{UID}/{CID}"), 777)
    kubelet.before_answer = lambda: make_proc(proc, 100, v2("/user.slice/user-1000.slice/x.scope"), 778)
    attestor = KubernetesAttestor(TD, ProcFs(proc), client(kubelet, tmp_path))
    with pytest.raises(PermissionDenied, match="exited or was replaced"):
        attestor.attest(Caller(100, 1000, 1000))


def test_pid_replaced_right_after_its_cgroup_was_read_is_refused(
    kubelet: FakeKubelet, tmp_path: Path
) -> None:
    procs = FakeProcessTable()
    procs.spawn(100, v2("/user.slice/user-1000.slice/x.scope"), start_time=5)

    def replace(pid: int) -> None:
        procs.after_cgroup_read = None
        procs.spawn(pid, v2(f"/kubepods/burstable/pod{UID}/{CID}"), start_time=6)

    procs.after_cgroup_read = replace
    attestor = KubernetesAttestor(TD, procs, client(kubelet, tmp_path))
    assert attestor.attest(Caller(100, 0, 0)) == ()  # judged by the cgroup it read: no pod
    procs.spawn(100, v2(f"/kubepods/burstable/pod{UID}/{CID}"), start_time=7)
    procs.after_cgroup_read = lambda pid: procs.spawn(pid, v2("/"), start_time=8)
    with pytest.raises(AttestationRefused):
        attestor.attest(Caller(100, 0, 0))
    procs.after_cgroup_read = procs.exit
    procs.spawn(100, v2(f"/kubepods/burstable/pod{UID}/{CID}"), start_time=9)
    with pytest.raises(AttestationRefused):
        attestor.attest(Caller(100, 0, 0))
    procs.after_cgroup_read = None
    procs.spawn(100, v2(f"/kubepods/burstable/pod{UID}/{CID}"), start_time=10)
    assert attestor.attest(Caller(100, 0, 0)) == (CART,)


def test_contradicting_cgroups_are_refused(kubelet: FakeKubelet, tmp_path: Path) -> None:
    procs = FakeProcessTable()
    procs.spawn(100, v2(f"/kubepods/pod{UID}/{CID}") + OTHER_V1_LINE)
    with pytest.raises(AttestationRefused, match="different pods"):
        KubernetesAttestor(TD, procs, client(kubelet, tmp_path)).attest(Caller(100, 0, 0))


def test_kubelet_down_is_not_mistaken_for_no_identity(kubelet: FakeKubelet, tmp_path: Path) -> None:
    procs = FakeProcessTable()
    procs.spawn(100, v2(f"/kubepods/pod{UID}/{CID}"))
    kubelet.fail_with = 503
    with pytest.raises(DependencyError):
        KubernetesAttestor(TD, procs, client(kubelet, tmp_path)).attest(Caller(100, 0, 0))


# --- unix attestor ------------------------------------------------------------------------------

def test_unix_entries_match_uid_and_gid() -> None:
    entries = parse_entries([
        f"web=uid:1000=spiffe://{TD}/ns/web/sa/front",
        f"batch=uid:1001,gid:50=spiffe://{TD}/ns/batch/sa/jobs",
        f"ops=gid:50=spiffe://{TD}/ops",
    ], TD)
    attestor = UnixAttestor(entries)
    front, jobs, ops = (e.spiffe_id for e in entries)
    assert attestor.attest(Caller(1, 1000, 1000)) == (front,)
    assert attestor.attest(Caller(1, 1001, 50)) == (jobs, ops)
    assert attestor.attest(Caller(1, 1001, 51)) == ()
    assert attestor.attest(Caller(1, 0, 0)) == ()


@pytest.mark.parametrize(("text", "message"), [
    ("web=uid:1000", "expected NAME=uid:<n>"),
    (f"=uid:1=spiffe://{TD}/a", "the name must be"),
    (f"we b=uid:1=spiffe://{TD}/a", "the name must be"),
    (f"web==spiffe://{TD}/a", "is not uid:<n> or gid:<n>"),
    (f"web=pid:1=spiffe://{TD}/a", "is not uid:<n> or gid:<n>"),
    (f"web=uid:1,uid:2=spiffe://{TD}/a", "uid is given twice"),
    (f"web=uid:-1=spiffe://{TD}/a", "is not a number"),
    (f"web=uid:4294967295=spiffe://{TD}/a", "is not a number"),
    (f"web=uid:\uff11=spiffe://{TD}/a", "is not a number"),  # a full-width digit one
    ("web=uid:1=https://x/a", "is not a SPIFFE ID"),
    ("web=uid:1=spiffe://other.td/a", "outside the trust domain"),
    (f"web=uid:1=spiffe://{TD}", "trust domain itself"),
    (f"web=uid:1=spiffe://{TD}/a/../b", "is not a SPIFFE ID"),
])
def test_bad_unix_entries_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_entry(text, TD)


def test_unix_entry_names_are_unique() -> None:
    with pytest.raises(ConfigurationError, match="web repeated"):
        parse_entries([f"web=uid:1=spiffe://{TD}/a", f"web=uid:2=spiffe://{TD}/b"], TD)


def test_peer_credentials_of_a_real_unix_socket() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_credentials(left) == Caller(os.getpid(), os.getuid(), os.getgid())


def test_peer_credentials_across_a_listening_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        result: list[Caller] = []

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                result.append(peer_credentials(conn))

        t = threading.Thread(target=accept)
        t.start()
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(path)
            t.join(timeout=5)
    assert result == [Caller(os.getpid(), os.getuid(), os.getgid())]
