"""The serving file replaced while a listener reloads it (found by the crash campaign: a worker
paired the new key with the old certificate, failed its reload with KEY_VALUES_MISMATCH, and
went on serving a certificate that then expired)."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshca.transport.tls_front import server_ssl_context


def _key_and_cert(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)


def test_a_reload_never_pairs_a_new_key_with_an_old_certificate(tmp_path: Path) -> None:
    serving = tmp_path / "serving.pem"
    contents = [_key_and_cert("a"), _key_and_cert("b")]
    bundle = contents[0].split(b"-----END PRIVATE KEY-----\n", 1)[1].decode()
    serving.write_bytes(contents[0])
    stop = threading.Event()

    def replace_forever() -> None:  # as write_private_file does: a temporary file, then rename
        index = 0
        while not stop.is_set():
            index ^= 1
            staged = tmp_path / "serving.pem.tmp"
            staged.write_bytes(contents[index])
            os.replace(staged, serving)

    replacer = threading.Thread(target=replace_forever)
    replacer.start()
    try:
        for _ in range(400):
            server_ssl_context(str(serving), None, bundle)  # raised KEY_VALUES_MISMATCH before
    finally:
        stop.set()
        replacer.join()
    assert sorted(p.name for p in tmp_path.iterdir()) in (["serving.pem"], ["serving.pem", "serving.pem.tmp"])
