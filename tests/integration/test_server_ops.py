"""Operating the server: health, reflection, metrics, restarts, key types, files, CLI."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meshca.core import jwt
from meshca.core.jwks import to_jwk
from tests.support import MeshcaProcess, csr_pem, projected_claims, rsa_key, start_meshca


def test_health_reports_serving(meshca: MeshcaProcess) -> None:
    stub = health_pb2_grpc.HealthStub(meshca.channel())
    for service in ("", "istio.v1.auth.IstioCertificateService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_ca_service(meshca: MeshcaProcess) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(meshca.channel())
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert "istio.v1.auth.IstioCertificateService" in names
    assert "grpc.health.v1.Health" in names


def _metrics(meshca: MeshcaProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{meshca.metrics_addr}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_use_istio_names_and_count(meshca: MeshcaProcess) -> None:
    before = _metrics(meshca)
    meshca.create_certificate(csr_pem())
    with pytest.raises(grpc.RpcError):
        meshca.create_certificate(csr_pem(), metadata=[])
    with pytest.raises(grpc.RpcError):
        meshca.create_certificate("not a csr")
    after = _metrics(meshca)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("citadel_server_csr_count") == 3
    assert delta("citadel_server_success_cert_issuance_count") == 1
    assert delta("citadel_server_authentication_failure_count") == 1
    assert delta('citadel_server_csr_sign_err_count{error="invalid_argument"}') == 1
    assert delta("meshca_issuance_duration_seconds_count") == 1
    root = x509.load_pem_x509_certificate(meshca.bundle_pem)
    assert after["citadel_server_root_cert_expiry_timestamp"] == root.not_valid_after_utc.timestamp()


def test_restart_reuses_the_ca_and_keeps_records(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_meshca(data)
    try:
        chain_before = first.create_certificate(csr_pem())
        bundle_before = first.bundle_pem
    finally:
        first.stop()
    second = start_meshca(data)
    try:
        chain_after = second.create_certificate(csr_pem())
        assert second.bundle_pem == bundle_before
        assert chain_after[1] == chain_before[1]  # same intermediate
        assert second.issued_count() == 2
    finally:
        second.stop()


def test_data_dir_permissions(meshca: MeshcaProcess) -> None:
    data = meshca.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    key_files = [*data.glob("keys/*.pem"), data / "dev-token-issuer.key", data / "tls" / "serving.pem"]
    assert len(key_files) >= 4
    for path in key_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((data / "meshca.db").stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in meshca.log_text()


@pytest.mark.parametrize(("key_type", "expected"), [
    ("ec-p384", lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp384r1"),
    ("rsa-2048", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
])
def test_ca_key_types(tmp_path: Path, key_type: str, expected: object) -> None:
    server = start_meshca(tmp_path / "data", "--ca-key-type", key_type)
    try:
        chain = server.create_certificate(csr_pem())
        intermediate = x509.load_pem_x509_certificate(chain[1].encode())
        root = x509.load_pem_x509_certificate(chain[2].encode())
        assert expected(intermediate.public_key())  # type: ignore[operator]
        assert expected(root.public_key())  # type: ignore[operator]
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        leaf.verify_directly_issued_by(intermediate)
        assert root.subject != intermediate.subject
    finally:
        server.stop()


def test_configured_issuer_with_rs256_jwks(tmp_path: Path) -> None:
    """Production mode: the cluster's issuer and its published keys, RS256."""
    key = rsa_key()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [to_jwk(key.public_key(), "cluster-key-1")]}))
    issuer = "https://kubernetes.default.svc.cluster.local"
    server = start_meshca(tmp_path / "data", "--token-issuer", issuer, "--token-jwks", str(jwks),
                          "--trust-domain", "example.org")
    try:
        token = jwt.sign(projected_claims("payments", "ledger", issuer=issuer), key, "cluster-key-1")
        chain = server.create_certificate(csr_pem(), token=token)
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier) == [
                "spiffe://example.org/ns/payments/sa/ledger"]
        assert "DEVELOPMENT TOKEN ISSUER" not in server.log_text()
        dev = server.data_dir / "dev-token-issuer.key"
        assert not dev.exists()
    finally:
        server.stop()


def _meshca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshca", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_request_cli_writes_a_working_identity(meshca: MeshcaProcess, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _meshca("request", "--data-dir", str(meshca.data_dir), "--namespace", "shop",
                     "--service-account", "cart", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "spiffe://cluster.local/ns/shop/sa/cart" in result.stdout
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates((out / "cert-chain.pem").read_bytes())
    assert len(chain) == 2
    assert (out / "root-cert.pem").read_bytes() == meshca.bundle_pem
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "root-cert.pem"),
                             "-untrusted", str(out / "cert-chain.pem"), str(out / "cert-chain.pem")],
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stderr


def test_dev_token_is_shaped_like_a_projected_token(meshca: MeshcaProcess) -> None:
    result = _meshca("dev", "token", "--data-dir", str(meshca.data_dir), "--namespace", "ns1",
                     "--service-account", "sa1", "--pod-name", "p-1", "--ttl", "15m")
    assert result.returncode == 0, result.stderr
    decoded = jwt.decode(result.stdout.strip())
    claims = decoded.claims
    assert decoded.alg == "ES256" and decoded.kid
    assert claims["sub"] == "system:serviceaccount:ns1:sa1"
    assert claims["aud"] == ["istio-ca"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["kubernetes.io"]["namespace"] == "ns1"
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "sa1"
    assert claims["kubernetes.io"]["pod"]["name"] == "p-1"
    assert set(claims) >= {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "kubernetes.io"}


def test_tools_beside_a_server_refuse_a_wrong_or_missing_kek_in_one_line(
        meshca: MeshcaProcess, tmp_path: Path) -> None:
    other = tmp_path / "other.kek"
    other.write_text(base64.b64encode(b"k" * 32).decode())
    for args in (["dev", "token", "--namespace", "a", "--service-account", "b"],
                 ["request", "--namespace", "a", "--service-account", "b", "--out", str(tmp_path / "o")]):
        wrong = _meshca(*args, "--data-dir", str(meshca.data_dir), "--kek-file", str(other))
        assert wrong.returncode == 1 and "Traceback" not in wrong.stderr, wrong.stderr
        assert "sealed under key-encryption key" in wrong.stderr
        missing = _meshca(*args, "--data-dir", str(meshca.data_dir),
                          "--kek-file", str(tmp_path / "nowhere.kek"))
        assert missing.returncode == 1 and "no key-encryption key at" in missing.stderr
        assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["serve", "--default-ttl", "8d"], "must not exceed"),
    (["serve", "--max-ttl", "200d"], "no leaf is cut short"),
    (["serve", "--workers", "0"], "not a positive whole number"),
    (["serve", "--max-ttl", "soon"], "is not a duration"),
    (["serve", "--ca-key-type", "dsa-1024"], "invalid"),
    (["dev", "token", "--namespace", "a", "--service-account", "b"], "no development issuer"),
])
def test_cli_refuses_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = _meshca(*args[:1], *(["--data-dir", str(tmp_path / "empty")] if args[0] == "serve" else []),
                     *args[1:], *(["--data-dir", str(tmp_path / "empty")] if args[0] == "dev" else []))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _worker_pids(pid: int) -> list[int]:
    """Spawned worker processes of `pid` (not multiprocessing's resource tracker)."""
    children = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cmdline = (stat_file.parent / "cmdline").read_bytes()
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            children.append(int(stat_file.parent.name))
    return children


def test_workers_share_the_port_records_and_metrics(tmp_path: Path) -> None:
    server = start_meshca(tmp_path / "data", "--workers", "2")
    try:
        assert len(_worker_pids(server.process.pid)) == 1, "one worker beside the first"
        token = server.token()
        for _ in range(30):  # a new connection each time, so the kernel spreads them
            channel = grpc.secure_channel(
                server.grpc_addr, grpc.ssl_channel_credentials(server.bundle_pem),
                options=[("grpc.ssl_target_name_override", "localhost")])
            server.create_certificate(csr_pem(), token=token, channel=channel)
            channel.close()
        assert server.issued_count() == 30
        metrics = _metrics(server)
        assert metrics["citadel_server_success_cert_issuance_count"] == 30
        per_worker = [metrics['meshca_worker_issued_certificates_total{worker="0"}'],
                      metrics['meshca_worker_issued_certificates_total{worker="1"}']]
        assert sum(per_worker) == 30 and min(per_worker) > 0, per_worker
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()
    assert server.process.returncode == 0


def test_a_dead_worker_stops_the_server(tmp_path: Path) -> None:
    import os
    import signal
    server = start_meshca(tmp_path / "data", "--workers", "2")
    try:
        [worker] = _worker_pids(server.process.pid)
        os.kill(worker, signal.SIGKILL)
        assert server.process.wait(20) == 1
        assert "exited with code -9; stopping meshca" in server.log_text()
    finally:
        server.stop()


def test_start_up_problems_are_reported_without_a_traceback(tmp_path: Path) -> None:
    result = _meshca("serve", "--data-dir", str(tmp_path / "data"), "--grpc-addr", "127.0.0.1:0",
                     "--metrics-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
                     "--ext-authz-addr", "127.0.0.1:0",  # ports are taken first: none fixed
                     "--token-issuer", "https://issuer.example",
                     "--token-jwks", str(tmp_path / "missing-jwks.json"))
    assert result.returncode == 2
    assert "meshca: cannot start:" in result.stderr and "missing-jwks.json" in result.stderr
    assert "Traceback" not in result.stderr
