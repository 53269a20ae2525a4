"""The trust bundle in `istio-ca-root-cert` ConfigMaps, against the in-test Kubernetes API server.

Everything goes through the real stack: BundlePublisher -> KubeCalls (thread pool, rate limit)
-> RootCertConfigMaps -> the official `kubernetes` client -> HTTPS -> FakeKubeApi.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client

from meshca.infra.kube import configmaps as configmaps_module
from meshca.infra.kube.api import KubeApi
from meshca.infra.kube.configmaps import RootCertConfigMaps
from meshca.service.bundle_publisher import BundlePublisher, PublishReport
from meshca.service.kube_calls import KubeCalls
from meshca.service.ports import KubeApiError
from tests.fakes.kube_api import FakeKubeApi

CM = "istio-ca-root-cert"
KEY = "root-cert.pem"
MANAGED = {"app.kubernetes.io/managed-by": "meshca"}
SELECTOR = "istio-injection=enabled"
MESH = {"istio-injection": "enabled"}
WRITES = ("POST", "PUT", "DELETE")


def root_pem(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


ROOT_1 = root_pem("meshca root 1")
ROOT_2 = root_pem("meshca root 2")


class RecordingMetrics:
    def __init__(self) -> None:
        self.calls: Counter[tuple[str, bool]] = Counter()

    def token_cache(self, outcome: str) -> None:
        pass

    def kube_call(self, kind: str, seconds: float, ok: bool) -> None:
        self.calls[(kind, ok)] += 1


@dataclass
class Mesh:
    kube: FakeKubeApi
    api: KubeApi
    metrics: RecordingMetrics
    calls: KubeCalls
    publisher: BundlePublisher
    bundle: list[str]  # [current PEM]; the publisher reads bundle[0]

    def once(self) -> PublishReport:
        return asyncio.run(self.publisher.publish_once())

    def root_cert(self, namespace: str) -> dict[str, Any] | None:
        return self.kube.configmap(namespace, CM)

    def writes(self) -> int:
        calls = self.kube.calls.items()
        return sum(n for (method, kind), n in calls if kind == "configmaps" and method in WRITES)

    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api.api_client)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with FakeKubeApi() as kube, ThreadPoolExecutor(8, thread_name_prefix="kube") as pool:
        kube.add_namespace("shop", MESH)
        kube.add_namespace("pay", {**MESH, "team": "payments"})
        kube.add_namespace("tools", {"istio-injection": "disabled"})
        kube.add_namespace("kube-system")
        api = KubeApi.connect("local", str(kube.kubeconfig(tmp_path / "kubeconfig")))
        metrics = RecordingMetrics()
        calls = KubeCalls(api, qps=1000, burst=1000, pool=pool, metrics=metrics)
        bundle = [ROOT_1]
        publisher = BundlePublisher(calls, SELECTOR, lambda: bundle[0],
                                    configmaps=RootCertConfigMaps.of(api))
        yield Mesh(kube, api, metrics, calls, publisher, bundle)
        api.api_client.close()


def assert_published(mesh: Mesh, namespace: str, pem: str) -> dict[str, Any]:
    cm = mesh.root_cert(namespace)
    assert cm is not None, f"no {CM} in {namespace}"
    assert cm["data"][KEY] == pem
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "meshca"
    return cm


# --------------------------------------------------------------------------- passes


def test_publishes_to_exactly_the_labelled_namespaces(mesh: Mesh) -> None:
    report = mesh.once()
    assert report == PublishReport(("pay", "shop"), ("pay", "shop"), (), {})
    assert report.ok
    for namespace in ("pay", "shop"):
        cm = assert_published(mesh, namespace, ROOT_1)
        assert cm["data"] == {KEY: ROOT_1} and cm["metadata"]["labels"] == MANAGED
    assert mesh.root_cert("tools") is None and mesh.root_cert("kube-system") is None
    assert [c["metadata"]["namespace"] for c in mesh.kube.configmaps()] == ["pay", "shop"]
    assert mesh.kube.calls[("POST", "configmaps")] == 2 and mesh.writes() == 2
    # Every call went through KubeCalls, measured by kind.
    assert mesh.metrics.calls == {("namespaces", True): 1, ("configmaps", True): 3}


def test_second_pass_writes_nothing(mesh: Mesh) -> None:
    mesh.once()
    versions = {ns: mesh.root_cert(ns)["metadata"]["resourceVersion"] for ns in ("pay", "shop")}  # type: ignore[index]
    mesh.kube.reset_calls()
    report = mesh.once()
    assert report == PublishReport(("pay", "shop"), (), ("pay", "shop"), {})
    # One namespace list and one ConfigMap list: no per-namespace reads, no writes.
    assert mesh.kube.calls == {("GET", "namespaces"): 1, ("GET", "configmaps"): 1}
    assert {ns: mesh.root_cert(ns)["metadata"]["resourceVersion"] for ns in versions} == versions  # type: ignore[index]


def test_bundle_change_rewrites_all(mesh: Mesh) -> None:
    mesh.once()
    uids = {ns: mesh.root_cert(ns)["metadata"]["uid"] for ns in ("pay", "shop")}  # type: ignore[index]
    mesh.bundle[0] = ROOT_1 + ROOT_2  # a rotation publishes the next root next to the current one
    mesh.kube.reset_calls()
    report = mesh.once()
    assert report.written == ("pay", "shop") and report.ok
    assert mesh.kube.calls[("PUT", "configmaps")] == 2 and mesh.writes() == 2
    for namespace in ("pay", "shop"):
        cm = assert_published(mesh, namespace, ROOT_1 + ROOT_2)
        assert cm["metadata"]["uid"] == uids[namespace]  # updated in place, never deleted
    assert mesh.once().written == ()


def test_hand_edited_configmap_is_put_back(mesh: Mesh) -> None:
    mesh.once()
    core = mesh.core()
    edited = core.read_namespaced_config_map(CM, "shop")
    edited.data = {KEY: "-----BEGIN CERTIFICATE-----\nforged\n-----END CERTIFICATE-----\n", "note": "mine"}
    edited.metadata.labels = {"owner": "someone"}
    edited.metadata.annotations = {"edited-by": "hand"}
    core.replace_namespaced_config_map(CM, "shop", edited)
    # Only the label went missing in pay: that is also out of sync.
    mesh.kube.put_configmap("pay", CM, {KEY: ROOT_1})
    report = mesh.once()
    assert report.written == ("pay", "shop") and report.ok
    shop = assert_published(mesh, "shop", ROOT_1)
    # meshca's key and label are restored; what else someone put there is left alone.
    assert shop["data"] == {KEY: ROOT_1, "note": "mine"}
    assert shop["metadata"]["labels"] == {"owner": "someone", **MANAGED}
    assert shop["metadata"]["annotations"] == {"edited-by": "hand"}
    assert assert_published(mesh, "pay", ROOT_1)["metadata"]["labels"] == MANAGED
    # Deleted by hand: created again.
    core.delete_namespaced_config_map(CM, "pay")
    assert mesh.once().written == ("pay",)
    assert_published(mesh, "pay", ROOT_1)


def test_immutable_hand_made_configmap_is_replaced(mesh: Mesh) -> None:
    mesh.kube.put_configmap("shop", CM, {KEY: "stale", "extra": "x"}, labels={"a": "b"},
                            binary_data={KEY: b"\x00", "blob": b"\x01"}, immutable=True)
    before = mesh.root_cert("shop")["metadata"]["uid"]  # type: ignore[index]
    report = mesh.once()
    assert report.written == ("pay", "shop") and report.ok
    shop = assert_published(mesh, "shop", ROOT_1)
    assert shop["metadata"]["uid"] != before and "immutable" not in shop
    assert shop["data"] == {KEY: ROOT_1, "extra": "x"} and shop["binaryData"] == {"blob": "AQ=="}
    assert shop["metadata"]["labels"] == {"a": "b", **MANAGED}
    assert mesh.once().written == ()


def test_new_labelled_namespace_gets_it_on_the_next_pass(mesh: Mesh) -> None:
    mesh.once()
    mesh.kube.add_namespace("orders", MESH)
    mesh.kube.add_namespace("tools", MESH)  # relabelled into the mesh
    mesh.kube.add_namespace("pay", {"team": "payments"})  # relabelled out of it
    mesh.kube.reset_calls()
    report = mesh.once()
    assert report == PublishReport(("orders", "shop", "tools"), ("orders", "tools"), ("shop",), {})
    assert mesh.kube.calls[("POST", "configmaps")] == 2 and mesh.writes() == 2
    assert_published(mesh, "orders", ROOT_1)
    assert_published(mesh, "tools", ROOT_1)
    # A namespace that left the selection keeps what it has; nothing is deleted behind its back.
    assert_published(mesh, "pay", ROOT_1)


def test_terminating_namespace_is_skipped(mesh: Mesh) -> None:
    mesh.kube.terminate_namespace("pay")
    report = mesh.once()
    assert report == PublishReport(("shop",), ("shop",), (), {})
    assert mesh.root_cert("pay") is None


def test_many_namespaces_are_listed_page_by_page(mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(configmaps_module, "_PAGE", 3)
    for index in range(8):
        mesh.kube.add_namespace(f"app-{index}", MESH)
    report = mesh.once()
    assert len(report.namespaces) == 10 and len(report.written) == 10 and report.ok
    assert mesh.kube.calls[("GET", "namespaces")] == 4  # 10 selected namespaces, 3 a page
    mesh.kube.reset_calls()
    assert mesh.once().unchanged == report.namespaces
    assert mesh.kube.calls[("GET", "configmaps")] == 4 and mesh.writes() == 0


# --------------------------------------------------------------------------- concurrency and failures


def test_conflict_from_a_concurrent_writer_is_retried(mesh: Mesh) -> None:
    mesh.once()
    mesh.bundle[0] = ROOT_2
    item = f"/api/v1/namespaces/shop/configmaps/{CM}"
    # Between meshca's read and its replace, someone else writes: the replace gets 409 Conflict.
    mesh.kube.before("PUT", item, lambda: mesh.kube.put_configmap("shop", CM, {KEY: "theirs"}))
    mesh.kube.reset_calls()
    report = mesh.once()
    assert report.written == ("pay", "shop") and report.ok
    assert mesh.kube.calls[("PUT", "configmaps")] == 3  # pay 1, shop 2 (the first one refused)
    assert_published(mesh, "shop", ROOT_2)


def test_create_racing_another_creator_is_retried(mesh: Mesh) -> None:
    collection = "/api/v1/namespaces/shop/configmaps"
    mesh.kube.before("POST", collection, lambda: mesh.kube.put_configmap("shop", CM, {KEY: "theirs"}))
    report = mesh.once()  # the create gets 409 AlreadyExists, then meshca reads and replaces
    assert report.written == ("pay", "shop") and report.ok
    assert mesh.kube.calls[("POST", "configmaps")] == 2 and mesh.kube.calls[("PUT", "configmaps")] == 1
    assert_published(mesh, "shop", ROOT_1)


def test_endless_conflicts_are_reported_not_retried_forever(mesh: Mesh) -> None:
    mesh.once()
    mesh.bundle[0] = ROOT_2
    item = f"/api/v1/namespaces/shop/configmaps/{CM}"
    counter = iter(range(1000))
    mesh.kube.before(
        "PUT", item, lambda: mesh.kube.put_configmap("shop", CM, {KEY: f"theirs {next(counter)}"}), times=None
    )
    report = mesh.once()
    assert report.written == ("pay",)
    assert set(report.failed) == {"shop"} and "409" in report.failed["shop"]
    assert "the object has been modified" in report.failed["shop"]
    assert mesh.kube.calls[("PUT", "configmaps")] == 1 + configmaps_module._ATTEMPTS
    mesh.kube.clear_faults()
    assert mesh.once().written == ("shop",)


@pytest.mark.parametrize(("status", "fragment"), [
    (500, "500 Internal Server Error: Internal error occurred: etcdserver: request timed out"),
    (403, 'configmaps "istio-ca-root-cert" is forbidden'),
    (503, "503 Service Unavailable"),
])
def test_api_failure_on_one_namespace_is_reported_and_others_proceed(
    mesh: Mesh, status: int, fragment: str
) -> None:
    mesh.kube.fail("/api/v1/namespaces/shop/configmaps", status)
    report = mesh.once()
    assert report.namespaces == ("pay", "shop") and report.written == ("pay",)
    assert not report.ok and set(report.failed) == {"shop"}
    assert fragment in report.failed["shop"]
    assert_published(mesh, "pay", ROOT_1)
    assert mesh.root_cert("shop") is None
    mesh.kube.clear_faults()
    assert mesh.once() == PublishReport(("pay", "shop"), ("shop",), ("pay",), {})


def test_namespace_deleted_during_a_pass_is_reported(mesh: Mesh) -> None:
    item = f"/api/v1/namespaces/shop/configmaps/{CM}"
    mesh.kube.before("GET", item, lambda: mesh.kube.delete_namespace("shop"))
    report = mesh.once()
    assert report.written == ("pay",)
    assert report.failed == {"shop": 'Kubernetes API answered 404 Not Found: namespaces "shop" not found'}


def test_api_down_fails_the_pass_then_recovers(mesh: Mesh) -> None:
    mesh.kube.go_down()
    with pytest.raises(KubeApiError, match="not reachable"):
        mesh.once()
    mesh.kube.come_up()
    assert mesh.once().written == ("pay", "shop")


def test_a_bundle_without_certificates_is_never_published(mesh: Mesh) -> None:
    mesh.once()
    mesh.bundle[0] = ""
    mesh.kube.reset_calls()
    with pytest.raises(ValueError, match="no PEM certificate"):
        mesh.once()
    assert not mesh.kube.calls
    assert_published(mesh, "shop", ROOT_1)


def test_rate_limited_list_is_retried_by_kube_calls(mesh: Mesh) -> None:
    mesh.kube.fail("/api/v1/namespaces", 429, times=1, retry_after=0)
    assert mesh.once().written == ("pay", "shop")
    assert mesh.metrics.calls[("namespaces", False)] == 1 and mesh.metrics.calls[("namespaces", True)] == 1


# --------------------------------------------------------------------------- the object itself


def test_configmap_matches_the_kubernetes_schema(mesh: Mesh) -> None:
    mesh.once()
    stored = mesh.root_cert("shop")
    assert stored is not None
    # As served by the API server and parsed by the official client's model.
    model = client.V1ConfigMap.from_dict(stored)
    assert model is not None
    assert (model.api_version, model.kind) == ("v1", "ConfigMap")
    assert (model.metadata.name, model.metadata.namespace) == (CM, "shop")
    assert model.metadata.labels == MANAGED and model.metadata.annotations is None
    assert model.data == {KEY: ROOT_1} and model.binary_data is None and model.immutable is None
    assert mesh.core().read_namespaced_config_map(CM, "shop").data == {KEY: ROOT_1}
    # The value is the bundle, PEM, byte for byte, and parses as the certificates it holds.
    certs = x509.load_pem_x509_certificates(model.data[KEY].encode())
    assert [c.subject.rfc4514_string() for c in certs] == ["CN=meshca root 1"]
    # Only schema fields, with the API server's own metadata.
    assert set(stored) == {"kind", "apiVersion", "metadata", "data"}
    assert set(stored["metadata"]) == {"name", "namespace", "uid", "resourceVersion", "creationTimestamp",
                                       "labels"}


# --------------------------------------------------------------------------- the loop


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def run_with(mesh: Mesh, interval: float, scenario: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(mesh.publisher.run(stop, interval))
        try:
            await scenario(stop)
        finally:
            stop.set()
            await asyncio.wait_for(loop, timeout=10)

    asyncio.run(main())


def test_run_keeps_every_selected_namespace_in_sync(mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="meshca.service.bundle_publisher")

    def holds(namespace: str, pem: str) -> bool:
        cm = mesh.root_cert(namespace)
        return cm is not None and cm.get("data", {}).get(KEY) == pem

    async def scenario(stop: asyncio.Event) -> None:
        await eventually(lambda: holds("shop", ROOT_1) and holds("pay", ROOT_1))
        # Idle: pass after pass reads, never writes.
        writes = mesh.writes()
        await asyncio.sleep(0.3)
        assert mesh.writes() == writes
        # A new namespace, a hand edit, then a new bundle announced with wake().
        mesh.kube.add_namespace("orders", MESH)
        mesh.kube.put_configmap("shop", CM, {KEY: "edited"})
        await eventually(lambda: holds("orders", ROOT_1) and holds("shop", ROOT_1))
        mesh.bundle[0] = ROOT_2
        mesh.publisher.wake()
        await eventually(lambda: all(holds(ns, ROOT_2) for ns in ("orders", "pay", "shop")), timeout=2)
        # The API server goes away and comes back: the loop carries on.
        mesh.kube.go_down()
        await eventually(lambda: "cannot list namespaces" in caplog.text)
        mesh.kube.come_up()
        mesh.kube.fail("/api/v1/namespaces/pay/configmaps", 500)
        mesh.bundle[0] = ROOT_1
        await eventually(lambda: holds("shop", ROOT_1) and holds("orders", ROOT_1))
        await eventually(lambda: "namespace pay not published" in caplog.text)
        mesh.kube.clear_faults()
        await eventually(lambda: holds("pay", ROOT_1))
        # The pass that wrote it reports once all its namespaces are done.
        await eventually(lambda: mesh.publisher.last_report is not None and mesh.publisher.last_report.ok)
        report = mesh.publisher.last_report
        assert report is not None and report.namespaces == ("orders", "pay", "shop")

    run_with(mesh, 0.05, scenario)
    # A failure that lasts is logged as a warning once, not on every pass.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "namespace pay" in r.message]
    assert len(warnings) == 1
    assert "published again" in caplog.text


def test_run_survives_a_broken_bundle_source_and_stops_promptly(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    broken = [True]

    def bundle() -> str:
        if broken[0]:
            raise RuntimeError("bundle store exploded")
        return ROOT_1

    publisher = BundlePublisher(mesh.calls, SELECTOR, bundle, configmaps=RootCertConfigMaps.of(mesh.api))
    mesh.publisher = publisher

    async def scenario(stop: asyncio.Event) -> None:
        await eventually(lambda: "publishing pass failed" in caplog.text)
        broken[0] = False
        await eventually(lambda: mesh.root_cert("shop") is not None)

    run_with(mesh, 0.05, scenario)
    with pytest.raises(ValueError):
        asyncio.run(publisher.run(asyncio.Event(), 0))


def test_wake_starts_a_pass_at_once_and_stop_ends_the_wait(mesh: Mesh) -> None:
    async def scenario(stop: asyncio.Event) -> None:
        await eventually(lambda: mesh.root_cert("shop") is not None and mesh.root_cert("pay") is not None)
        mesh.bundle[0] = ROOT_2
        await asyncio.sleep(0.2)
        assert_published(mesh, "shop", ROOT_1)  # the hour-long interval is still running
        mesh.publisher.wake()
        await eventually(lambda: all(
            (mesh.root_cert(ns) or {}).get("data", {}).get(KEY) == ROOT_2 for ns in ("pay", "shop")
        ), timeout=2)

    started = time.monotonic()
    run_with(mesh, 3600, scenario)  # run_with sets stop and gives the loop 10 s to end
    assert time.monotonic() - started < 5
