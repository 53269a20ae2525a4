"""scripts/bench-floor: what grpcio's server costs per call before meshca does anything.

Every row is a server driven by the same h2load load with the same CreateCertificate frame,
and its CPU seconds (all its processes) divided by the calls answered:

- meshca serve, the whole issuance (TLS, token, CSR checks, signing, validate-after-sign, the
  durable record): the baseline every other row is a ratio to;
- grpcio's servers with a handler that returns a canned, realistic response at once (raw
  bytes, no protobuf parsing): the thread-pool server and grpc.aio, in plaintext and with
  grpcio's own TLS (C core);
- in this process, without any transport: the three ECDSA operations an issuance cannot skip
  (the CSR's signature, signing the leaf, checking the fresh signature) with pyca/cryptography.

The canned rows are the floor for any issuance served by grpcio, whatever the handler does.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_issue import grpc_frame  # a sibling script, not a package

METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
TICKS = os.sysconf("SC_CLK_TCK")


# ---- the canned server (run as a subprocess of this script) ------------------------------

def serve_canned(kind: str, port: int, response: bytes, tls: tuple[bytes, bytes] | None) -> None:
    import grpc

    def answer(request: bytes, context: object) -> bytes:
        return response

    handler = grpc.method_handlers_generic_handler(
        "istio.v1.auth.IstioCertificateService",
        {"CreateCertificate": grpc.unary_unary_rpc_method_handler(answer)})
    address = f"127.0.0.1:{port}"
    credentials = None if tls is None else grpc.ssl_server_credentials([(tls[1], tls[0])])
    if kind == "sync":
        from concurrent.futures import ThreadPoolExecutor

        server = grpc.server(ThreadPoolExecutor(16), handlers=[handler])
        _ = (server.add_secure_port(address, credentials) if credentials
             else server.add_insecure_port(address))
        server.start()
        signal.sigwait({signal.SIGTERM})
        server.stop(None)
        return
    import asyncio

    async def run() -> None:
        aio_server = grpc.aio.server(handlers=[handler])
        _ = (aio_server.add_secure_port(address, credentials) if credentials
             else aio_server.add_insecure_port(address))
        await aio_server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await aio_server.stop(None)

    asyncio.run(run())


# ---- measuring ---------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    cpu_ms: float  # CPU ms per answered call
    answered: int


def _cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its direct children (meshca's workers)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench-floor: a server exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("bench-floor: a server did not listen within 30 s")


def h2load(url: str, body: Path, headers: list[str], args: argparse.Namespace, pid: int) -> tuple[float, int]:
    """(server CPU seconds, calls answered with 200) for one h2load run."""
    command = ["h2load", "-n", str(args.requests), "-c", str(args.clients), "-m", str(args.streams),
               "-t", "1", "-d", str(body)]
    for header in ["content-type: application/grpc", "te: trailers", *headers]:
        command += ["-H", header]
    before = _cpu_seconds(pid)
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=600).stdout
    spent = _cpu_seconds(pid) - before
    statuses = next((line for line in out.splitlines() if line.startswith("status codes:")), "")
    ok = int(statuses.split()[2]) if statuses else 0  # "status codes: N 2xx, ..."
    if ok == 0:
        raise SystemExit(f"bench-floor: no call answered by {url}:\n{out[-800:]}")
    return spent, ok


@contextmanager
def running(command: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _self_signed(work: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = work / "tls.pem", work / "tls-key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    key_path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def crypto_floor(csr_pem: bytes, rounds: int = 2000) -> float:
    """CPU ms per issuance of the three ECDSA operations, in this process (pyca/cryptography)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "floor CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    started = time.process_time()
    for _ in range(rounds):
        csr = x509.load_pem_x509_csr(csr_pem)
        assert csr.is_signature_valid
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_name)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=24))
                .sign(ca_key, hashes.SHA256()))
        leaf.verify_directly_issued_by(ca_cert)
    spent = time.process_time() - started
    return spent * 1000 / rounds


# ---- main --------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-floor")
    parser.add_argument("-n", "--requests", type=int, default=4000)
    parser.add_argument("-c", "--clients", type=int, default=16)
    parser.add_argument("-m", "--streams", type=int, default=4)
    sub = parser.add_subparsers(dest="command")
    canned = sub.add_parser("canned")  # internal: the canned server
    canned.add_argument("--kind", choices=["sync", "aio"], required=True)
    canned.add_argument("--port", type=int, required=True)
    canned.add_argument("--response", type=Path, required=True)
    canned.add_argument("--tls", type=Path, nargs=2, default=None)
    args = parser.parse_args()
    if args.command == "canned":
        tls = None if args.tls is None else (args.tls[0].read_bytes(), args.tls[1].read_bytes())
        serve_canned(args.kind, args.port, args.response.read_bytes(), tls)
        return 0
    if shutil.which("h2load") is None:
        raise SystemExit("bench-floor: h2load is missing (Debian nghttp2-client: scripts/bench-floor "
                         "installs it)")

    work = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    try:
        return _measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, work: Path) -> int:
    from meshca.gen.istio.v1.auth import ca_pb2

    print(f"bench-floor: h2load -n {args.requests} -c {args.clients} -m {args.streams} -t 1, "
          f"nproc={os.cpu_count()}; CPU ms per call = server CPU seconds (all its processes) / "
          "calls answered")
    key = ec.generate_private_key(ec.SECP256R1())
    csr_pem = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256()).public_bytes(Encoding.PEM)
    body = work / "request.bin"
    body.write_bytes(grpc_frame(ca_pb2.IstioCertificateRequest(csr=csr_pem.decode()).SerializeToString()))
    rows: list[Row] = []

    # the baseline: meshca, one worker, the whole issuance
    data = work / "meshca"
    port = _free_port()
    meshca = [sys.executable, "-m", "meshca", "serve", "--data-dir", str(data), "--workers", "1",
              "--grpc-addr", f"127.0.0.1:{port}", "--metrics-addr", "127.0.0.1:0",
              "--issuance-rate-per-identity", "off", "--issuance-rate-per-source", "off"]
    with running(meshca, port, work / "meshca.log") as process:
        while not (data / "endpoints.json").exists():
            time.sleep(0.05)
        token = subprocess.run([sys.executable, "-m", "meshca", "dev", "token", "--data-dir", str(data),
                                "--namespace", "bench", "--service-account", "load"],
                               capture_output=True, text=True, check=True).stdout.strip()
        url = f"https://127.0.0.1:{port}{METHOD}"
        h2load(url, body, [f"authorization: Bearer {token}"], args, process.pid)  # warm-up
        spent, ok = h2load(url, body, [f"authorization: Bearer {token}"], args, process.pid)
        rows.append(Row("meshca serve --workers 1: TLS, token, CSR, sign, validate, record",
                        spent * 1000 / ok, ok))

    # an answer of the size of meshca's (three PEM certificates of about 1 kB)
    response = ca_pb2.IstioCertificateResponse(cert_chain=["-----BEGIN CERTIFICATE-----\n" + "A" * 900
                                                           + "\n-----END CERTIFICATE-----\n"] * 3)
    (work / "response.bin").write_bytes(response.SerializeToString())
    cert, tls_key = _self_signed(work)
    for kind, tls in (("sync", False), ("aio", False), ("sync", True), ("aio", True)):
        port = _free_port()
        command = [sys.executable, __file__, "canned", "--kind", kind, "--port", str(port),
                   "--response", str(work / "response.bin")]
        if tls:
            command += ["--tls", str(cert), str(tls_key)]
        with running(command, port, work / f"canned-{kind}-{tls}.log") as process:
            url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{METHOD}"
            h2load(url, body, [], args, process.pid)  # warm-up
            spent, ok = h2load(url, body, [], args, process.pid)
        server = "thread-pool server" if kind == "sync" else "grpc.aio server"
        rows.append(Row(f"grpcio {server}, {'TLS (C core)' if tls else 'plaintext'}, canned answer",
                        spent * 1000 / ok, ok))
    rows.append(Row("in process, no transport: verify CSR, sign leaf, verify leaf (pyca)",
                    crypto_floor(csr_pem), 2000))

    baseline = rows[0].cpu_ms
    print(f"{'what the server did per call':<78} {'CPU ms/call':>11} {'ratio':>7} {'calls':>7}")
    for row in rows:
        print(f"{row.name:<78} {row.cpu_ms:>11.3f} {row.cpu_ms / baseline:>7.2f} {row.answered:>7}")
    floor = min(r.cpu_ms for r in rows[1:5] if "TLS" in r.name) + rows[-1].cpu_ms
    print(f"floor of a grpcio server over TLS + the three ECDSA operations: {floor:.3f} ms per "
          f"certificate, before any check, record or Python of meshca's own (issue 16's budget: 0.6 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
