"""Private keys sealed at rest under the KEK: what is on disk, what a copy reveals, migration."""

from __future__ import annotations

import base64
import logging
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from meshca.core.keys import KeyType, SigningKey
from meshca.infra.keyfiles import (
    KEK_ENV,
    FileKeyStore,
    KeyEncryptionKey,
    KeyFileError,
    SealedKeyFile,
    encrypted_tls_key_pem,
    open_private_key,
    private_key_pem,
    seal_private_key,
)
from tests.unit.pki import ec_key, rsa_key


def _secrets_of(key: SigningKey) -> list[bytes]:
    """Every form in which this key could leak: PEM, DER (PKCS#8 and traditional), raw numbers."""
    forms = [private_key_pem(key)]
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        forms.append(key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption()))
    numbers = key.private_numbers()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert isinstance(numbers, ec.EllipticCurvePrivateNumbers)
        forms.append(numbers.private_value.to_bytes((key.curve.key_size + 7) // 8, "big"))
    else:
        assert isinstance(numbers, rsa.RSAPrivateNumbers)
        forms += [numbers.d.to_bytes((numbers.d.bit_length() + 7) // 8, "big"),
                  numbers.p.to_bytes((numbers.p.bit_length() + 7) // 8, "big")]
    return forms


def _all_bytes(directory: Path) -> Iterator[tuple[Path, bytes]]:
    for path in directory.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def assert_key_absent(key: SigningKey, directory: Path) -> None:
    for path, data in _all_bytes(directory):
        for form in _secrets_of(key):
            assert form not in data, f"{path} holds the private key"
            assert base64.b64encode(form)[:40] not in data, f"{path} holds the private key in base64"


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey.generate()


@pytest.mark.parametrize("key", [ec_key("secp256r1", 21), ec_key("secp384r1", 21), rsa_key(2048, 21)],
                         ids=["p256", "p384", "rsa"])
def test_round_trip_and_only_ciphertext_on_disk(tmp_path: Path, kek: KeyEncryptionKey,
                                                key: SigningKey) -> None:
    data = tmp_path / "data"
    store = FileKeyStore(data, kek)
    location = store.put("root-1", key)

    assert location == "file:keys/root-1.pem"
    assert store.load(location).private_numbers() == key.private_numbers()
    path = data / "keys" / "root-1.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN MESHCA ENCRYPTED PRIVATE KEY-----")
    assert_key_absent(key, data)


def test_a_copied_data_dir_without_the_kek_reveals_nothing(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    data = tmp_path / "data"
    FileKeyStore(data, kek).put("root-1", ec_key("secp256r1", 22))
    with pytest.raises(KeyFileError, match="sealed under key-encryption key") as caught:
        FileKeyStore(data, KeyEncryptionKey.generate()).load("file:keys/root-1.pem")
    assert kek.key_id.hex() in str(caught.value)


def test_a_sealed_file_moved_to_another_name_is_refused(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    data = tmp_path / "data"
    store = FileKeyStore(data, kek)
    store.put("intermediate-1", ec_key("secp256r1", 23))
    (data / "keys" / "intermediate-1.pem").rename(data / "keys" / "root-1.pem")
    with pytest.raises(KeyFileError, match="belongs to another file"):
        store.load("file:keys/root-1.pem")


def test_tampered_ciphertext_is_refused(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    file = SealedKeyFile(tmp_path / "k.key", kek)
    file.write(ec_key("secp256r1", 24))
    lines = file.path.read_bytes().splitlines()
    blob = bytearray(base64.b64decode(b"".join(lines[1:-1])))
    blob[-1] ^= 1
    file.path.write_bytes(lines[0] + b"\n" + base64.encodebytes(bytes(blob)) + lines[-1] + b"\n")
    with pytest.raises(KeyFileError, match="corrupt"):
        file.read()


def test_old_plaintext_keys_are_read_then_resealed_in_place(tmp_path: Path, kek: KeyEncryptionKey,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    key = ec_key("secp256r1", 25)
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "root-old.pem").write_bytes(private_key_pem(key))
    (data / "keys" / "intermediate-old.pem").write_bytes(private_key_pem(rsa_key(2048, 25)))
    store = FileKeyStore(data, kek)

    with caplog.at_level(logging.DEBUG):
        assert store.load("file:keys/root-old.pem").private_numbers() == key.private_numbers()
        assert (data / "keys" / "root-old.pem").read_bytes().startswith(b"-----BEGIN MESHCA ENCRYPTED")
        assert store.seal_plaintext_keys() == ["file:keys/intermediate-old.pem"]
        assert store.seal_plaintext_keys() == []

    assert_key_absent(key, data)
    assert_key_absent(rsa_key(2048, 25), data)
    # The same location still works, now through decryption.
    assert store.load("file:keys/intermediate-old.pem").private_numbers() == \
        rsa_key(2048, 25).private_numbers()
    assert "re-encrypted the plaintext private key file" in caplog.text
    for form in _secrets_of(key):
        assert base64.b64encode(form)[:40].decode() not in caplog.text


def test_locations_cannot_leave_the_data_dir(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    store = FileKeyStore(tmp_path / "data", kek)
    for bad in ("file:../outside.pem", "file:/etc/ssl/private/x.pem", "vault-kv:secret/data/x#1"):
        with pytest.raises(ValueError):
            store.load(bad)


def test_kek_from_env_wins_over_the_file(tmp_path: Path) -> None:
    file_kek = KeyEncryptionKey.load_or_create(tmp_path / "meshca.kek", tmp_path / "data", {})
    env_text = base64.b64encode(b"\x01" * 32).decode()
    from_env = KeyEncryptionKey.load_or_create(tmp_path / "meshca.kek", tmp_path / "data",
                                               {KEK_ENV: env_text})
    assert from_env.key_id == KeyEncryptionKey(b"\x01" * 32).key_id != file_kek.key_id
    sealed = seal_private_key(from_env, ec_key("secp256r1", 26), "x")
    with pytest.raises(KeyFileError, match="sealed under key-encryption key"):
        open_private_key(file_kek, sealed, "x")
    opened = open_private_key(from_env, sealed, "x").key
    assert isinstance(opened, ec.EllipticCurvePrivateKey)
    assert opened.private_numbers() == ec_key("secp256r1", 26).private_numbers()


def test_kek_file_is_created_once_0600_and_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "meshca-data.kek"
    with caplog.at_level(logging.INFO):
        first = KeyEncryptionKey.load_or_create(path, tmp_path / "meshca-data", {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text())) == 32
    assert KeyEncryptionKey.load_or_create(path, tmp_path / "meshca-data", {}).key_id == first.key_id
    assert path.read_text().strip() not in caplog.text
    assert "created a new key-encryption key" in caplog.text


def test_kek_file_inside_the_data_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="inside the data dir"):
        KeyEncryptionKey.load_or_create(tmp_path / "data" / "kek", tmp_path / "data", {})


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_malformed_kek_is_a_clear_error_without_the_value(tmp_path: Path, text: str) -> None:
    with pytest.raises(KeyFileError, match=r"\$MESHCA_KEK is not base64 of 32 bytes") as caught:
        KeyEncryptionKey.from_text(text, "$MESHCA_KEK")
    if text:
        assert text not in str(caught.value)


def test_kek_repr_names_only_its_id() -> None:
    secret = b"\x07" * 32
    kek = KeyEncryptionKey(secret)
    assert repr(kek) == f"KeyEncryptionKey(id={kek.key_id.hex()})"
    assert base64.b64encode(secret).decode() not in repr(kek)


def test_serving_key_is_encrypted_yet_loads_into_ssl(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshca")])
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    pem = encrypted_tls_key_pem(kek, key)
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert_key_absent(key, tmp_path)  # nothing written yet: sanity of the helper
    (tmp_path / "serving.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM) + pem)
    assert_key_absent(key, tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "serving.pem", password=kek.tls_password())
    with pytest.raises(ssl.SSLError):
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            tmp_path / "serving.pem", password=KeyEncryptionKey.generate().tls_password())


def test_every_ca_key_type_round_trips(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    store = FileKeyStore(tmp_path, kek)
    for key_type in (KeyType.EC_P256, KeyType.EC_P384):
        key = key_type.generate()
        assert KeyType.of(store.load(store.put(f"k-{key_type.value}", key))) is key_type


def test_a_kek_file_others_can_read_is_used_with_a_warning(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "kek"
    path.write_text(base64.b64encode(b"\x02" * 32).decode())
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        kek = KeyEncryptionKey.load_or_create(path, tmp_path / "data", {})
    assert kek.key_id == KeyEncryptionKey(b"\x02" * 32).key_id
    assert "readable by other users" in caplog.text
