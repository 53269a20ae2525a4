"""A CA whose keys live in Vault Transit: what it signs verifies, and its keys are nowhere else.

The absence test runs meshca's side in its own process against the fake Vault in another,
then searches that process's memory (dumped from /proc/self/mem), its data dir (SQLite
database included) and its DEBUG log for the Transit private keys, fetched from the fake
only afterwards. A local key the same process does hold is found by the same search, so the
search is shown to work.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import PolicyBuilder, Store

from meshca.core import templates
from meshca.core.authority import SigningAuthority, sign_leaf
from meshca.core.bundle import TrustBundle, certificate_pem
from meshca.core.keys import KeyType
from meshca.core.remote_signing import LocalSigner, Signer, sign_certificate, sign_crl
from meshca.core.spiffe import SpiffeId
from meshca.infra.vault import (
    TokenAuth,
    TransitKeys,
    TransitLocation,
    VaultConnection,
    VaultSession,
)
from tests.fakes.vault_server import FakeVault

REPO = Path(__file__).resolve().parents[2]
TRUST_DOMAIN = "cluster.local"
WORKLOAD = SpiffeId.for_service_account(TRUST_DOMAIN, "shop", "cart")


@pytest.fixture
def fake() -> Iterator[FakeVault]:
    vault = FakeVault().serve()
    yield vault
    vault.stop()


def _ca(signer: Signer, issuer: tuple[x509.Certificate, Signer] | None, kind: str,
        now: datetime) -> x509.Certificate:
    serial = x509.random_serial_number()
    builder = templates.ca_certificate(
        public_key=signer.public_key, subject=templates.ca_subject("meshca", kind, 1, serial),
        trust_domain=SpiffeId.for_trust_domain(TRUST_DOMAIN), issuer=issuer[0] if issuer else None,
        serial=serial, not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=365 if issuer is None else 7), path_length=1 if issuer is None else 0)
    return sign_certificate(builder, issuer[1] if issuer else signer)


def _leaf(authority: SigningAuthority, now: datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = templates.leaf_svid(public_key=key.public_key(), spiffe_id=WORKLOAD,
                                  issuer=authority.certificate, serial=x509.random_serial_number(),
                                  not_before=now - timedelta(minutes=1), not_after=now + timedelta(hours=1))
    return sign_leaf(authority, builder, WORKLOAD)


def _crl(authority: SigningAuthority, revoked_serial: int, now: datetime) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(authority.certificate.subject)
               .last_update(now).next_update(now + timedelta(hours=1))
               .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
               .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(revoked_serial)
                                        .revocation_date(now).build()))
    return authority.sign_crl(builder)


@pytest.mark.parametrize("root_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
@pytest.mark.parametrize("intermediate_in_transit", [True, False], ids=["transit-intermediate", "local"])
def test_leaves_signed_through_transit_verify_against_the_bundle(
        fake: FakeVault, root_type: KeyType, intermediate_in_transit: bool) -> None:
    now = datetime.now(UTC)
    session = VaultSession(VaultConnection(fake.addr, fake.ca_cert), TokenAuth(token=fake.root_token))
    keys = TransitKeys(session)
    root_signer = keys.create(f"root-{secrets.token_hex(4)}", root_type)
    root = _ca(root_signer, None, "root", now)
    if intermediate_in_transit:
        transit_intermediate = keys.create(f"intermediate-{secrets.token_hex(4)}", KeyType.EC_P256)
        intermediate = _ca(transit_intermediate, (root, root_signer), "intermediate", now)
        authority = SigningAuthority(generation_id=2, certificate=intermediate, private_key=None, chain=(),
                                     bundle=TrustBundle((root,)),
                                     signer=keys.signer(str(transit_intermediate.location)))
    else:
        private_key = KeyType.EC_P256.generate()
        intermediate = _ca(LocalSigner(private_key), (root, root_signer), "intermediate", now)
        authority = SigningAuthority(generation_id=2, certificate=intermediate, private_key=private_key,
                                     chain=(), bundle=TrustBundle((root,)))
    assert authority.is_remote is intermediate_in_transit

    verifier = PolicyBuilder().store(Store(list(authority.bundle.roots))).time(now).build_client_verifier()
    for _ in range(3):
        leaf = _leaf(authority, now)
        verified = verifier.verify(leaf, [intermediate])
        assert verified.chain[-1] == root
        assert verified.subjects == [x509.UniformResourceIdentifier(WORKLOAD.uri)]

    crl = _crl(authority, leaf.serial_number, now)
    assert crl.is_signature_valid(intermediate.public_key())  # type: ignore[arg-type]
    root_crl = sign_crl(x509.CertificateRevocationListBuilder().issuer_name(root.subject).last_update(now)
                        .next_update(now + timedelta(hours=1)), root_signer)
    assert root_crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    signs = [p for m, p in fake.requests if m in ("POST", "PUT") and p.startswith("transit/sign/")]
    assert len(signs) == (2 + (4 if intermediate_in_transit else 0)) + 1


def test_a_transit_signature_from_a_rotated_key_version_is_never_used(fake: FakeVault) -> None:
    """Vault rotating the key under meshca must not produce certificates that fail to verify."""
    session = VaultSession(VaultConnection(fake.addr, fake.ca_cert), TokenAuth(token=fake.root_token))
    keys = TransitKeys(session)
    signer = keys.create("root-rotating", KeyType.EC_P256)
    now = datetime.now(UTC)
    root = _ca(signer, None, "root", now)
    session.call("rotate", lambda c: c.secrets.transit.rotate_key(name="root-rotating",
                                                                  mount_point="transit"))
    again = keys.signer(str(signer.location))  # as a restarted replica opens it from the journal
    intermediate = _ca(keys.create("intermediate-after-rotation", KeyType.EC_P256), (root, again),
                       "intermediate", now)
    intermediate.verify_directly_issued_by(root)
    signs = [p for m, p in fake.requests if p == "transit/sign/root-rotating"]
    assert len(signs) == 2
    assert fake.transit[("transit", "root-rotating")].latest == 2


# --- the private key is nowhere but in Vault ---------------------------------------------------

def _start_fake_process(root_token: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.vault_server", "--root-token", root_token],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        pytest.fail("the fake Vault process did not start")
    info: dict[str, str] = json.loads(line)
    return process, info


def _fake_private_der(info: dict[str, str], name: str) -> bytes:
    context = ssl.create_default_context(cafile=info["ca_cert"])
    url = f"{info['addr']}/v1/_fake/transit-private/transit/{name}/1"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return base64.b64decode(json.load(response)["data"]["pkcs8_der"])


def _leak_forms(der: bytes) -> list[bytes]:
    key = serialization.load_der_private_key(der, password=None)
    forms = [der, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()),
             key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        forms.append(key.private_numbers().private_value.to_bytes((key.curve.key_size + 7) // 8, "big"))
    elif isinstance(key, rsa.RSAPrivateKey):
        d = key.private_numbers().d
        forms.append(d.to_bytes((d.bit_length() + 7) // 8, "big"))
    forms.append(base64.b64encode(forms[-1]))
    return forms


def _contains(path: Path, needle: bytes) -> bool:
    """Stream a (possibly large) file, with overlap so a needle across chunks is found."""
    overlap = len(needle) - 1
    tail = b""
    with path.open("rb") as stream:
        while chunk := stream.read(16 << 20):
            if needle in tail + chunk:
                return True
            tail = chunk[-overlap:] if overlap else b""
    return False


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs /proc to dump process memory")
def test_transit_keys_are_absent_from_memory_data_dir_database_and_logs(tmp_path: Path) -> None:
    root_token = "hvs." + secrets.token_urlsafe(24)
    vault, info = _start_fake_process(root_token)
    try:
        env = {**os.environ, "VAULT_TOKEN": root_token, "MESHCA_TEST_FAKE_VAULT": json.dumps(info)}
        env.pop("MESHCA_KEK", None)
        run = subprocess.run(
            [sys.executable, "-c", "from tests.integration.test_vault_transit import meshca_side; "
             f"meshca_side({str(tmp_path)!r})"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stderr[-3000:]
        result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
        transit_keys = {name: _fake_private_der(info, name) for name in result["transit_keys"]}
    finally:
        vault.kill()
        vault.wait()

    data_dir, memory, log_file = tmp_path / "data", tmp_path / "memory.bin", tmp_path / "meshca.log"
    assert (data_dir / "meshca.db").exists()
    assert memory.stat().st_size > 1 << 20
    haystacks = [p for p in data_dir.rglob("*") if p.is_file()] + [log_file, memory]
    for name, der in transit_keys.items():
        for form in _leak_forms(der):
            for place in haystacks:
                assert not _contains(place, form), f"Transit key {name} found in {place}"
    # Positive control: the same search finds a key that process did hold (its TLS serving key).
    control = bytes.fromhex((tmp_path / "control-scalar.hex").read_text())
    assert _contains(memory, control)
    assert not any(_contains(p, control) for p in data_dir.rglob("*") if p.is_file())
    assert root_token not in log_file.read_text()


def meshca_side(workdir: str) -> None:
    """Runs in its own process: CA bring-up through Transit, records, files, logs; then a memory dump."""
    from meshca.core.rotation import Kind
    from meshca.infra.db.ca_journal import SqlCaJournal
    from meshca.infra.db.engine import database_url_for, migrate, open_engine
    from meshca.infra.keyfiles import encrypted_tls_key_pem, write_private_file
    from meshca.service.ca_ports import NewGeneration
    from meshca.wiring.keystore import KeystoreSettings, open_key_backend

    work = Path(workdir)
    logging.basicConfig(filename=work / "meshca.log", level=logging.DEBUG,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    info = json.loads(os.environ["MESHCA_TEST_FAKE_VAULT"])
    data_dir = work / "data"
    data_dir.mkdir()
    backend = open_key_backend(KeystoreSettings(
        keystore="vault-transit", vault_addr=info["addr"], vault_ca_cert=Path(info["ca_cert"]),
        vault_transit_intermediate=True), data_dir)
    assert backend.remote is not None and backend.creates_remotely("intermediate")
    now = datetime.now(UTC)
    root_signer = backend.remote.create(f"root-{secrets.token_hex(4)}", KeyType.EC_P256)
    inter_signer = backend.remote.create(f"intermediate-{secrets.token_hex(4)}", KeyType.EC_P256)
    root = _ca(root_signer, None, "root", now)
    intermediate = _ca(inter_signer, (root, root_signer), "intermediate", now)

    engine = open_engine(database_url_for(data_dir))
    migrate(engine)
    journal = SqlCaJournal(engine)
    parent: int | None = None
    generations = ((Kind.ROOT, root, root_signer), (Kind.INTERMEDIATE, intermediate, inter_signer))
    for kind, cert, signer in generations:
        parent = journal.add(None, now, NewGeneration(
            kind=kind, parent_id=parent, subject=cert.subject.rfc4514_string(),
            serial=f"{cert.serial_number:x}", key_type="ec-p256",
            key_location=str(signer.location), not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc, certificate_pem=certificate_pem(cert)))
    # Load as a worker would: from the journal's locations.
    assert parent is not None
    row = journal.row(parent)
    authority = SigningAuthority(generation_id=row.id, certificate=intermediate, private_key=None, chain=(),
                                 bundle=TrustBundle((root,)), signer=backend.signer(row.key_location))
    leaves = [_leaf(authority, now) for _ in range(5)]
    _crl(authority, leaves[0].serial_number, now)
    (data_dir / "root-cert.pem").write_text(authority.bundle.pem)
    serving_key = ec.generate_private_key(ec.SECP256R1())
    write_private_file(data_dir / "tls" / "serving.pem", encrypted_tls_key_pem(backend.kek, serving_key))
    scalar = serving_key.private_numbers().private_value.to_bytes(32, "big")
    (work / "control-scalar.hex").write_text(scalar.hex())
    engine.dispose()
    logging.getLogger("meshca.test").info("issued %d leaves through Transit", len(leaves))
    _dump_memory(work / "memory.bin")
    names = [TransitLocation.parse(str(s.location)).name for s in (root_signer, inter_signer)]
    print(json.dumps({"transit_keys": names}))


def _dump_memory(target: Path) -> None:
    """Every private writable mapping of this process (heap, arenas, stacks) into one file."""
    pattern = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem, target.open("wb") as out:
        for line in maps:
            match = pattern.match(line)
            if not match or not match.group(3).startswith("rw") or match.group(4) in ("[vvar]", "[vsyscall]"):
                continue
            start, end = int(match.group(1), 16), int(match.group(2), 16)
            for offset in range(start, end, 1 << 24):
                try:
                    mem.seek(offset)
                    out.write(mem.read(min(1 << 24, end - offset)))
                except OSError:
                    break
