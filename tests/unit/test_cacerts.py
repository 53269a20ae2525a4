"""Istio's plugged-in CA directory (cacerts): loading, every refusal, and reload on change."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from meshca.core import templates
from meshca.core.authority import sign_leaf
from meshca.core.keys import SigningKey
from meshca.core.spiffe import SpiffeId
from meshca.infra.cacerts import (
    CA_CERT,
    CA_FILES,
    CA_KEY,
    CERT_CHAIN,
    ROOT_CERT,
    PluggedCa,
    PluggedCaError,
    PluggedCaMissing,
    PluggedCaWatcher,
    directory_fingerprint,
    load_plugged_ca,
)
from tests.unit.pki import CALLER, NOW, TRUST_DOMAIN, ec_key, rsa_key

DAY = timedelta(days=1)
KeyFactory = Callable[[int], SigningKey]
KEY_KINDS: dict[str, KeyFactory] = {
    "ec": lambda n: ec_key("secp256r1", 300 + n),
    "rsa": lambda n: rsa_key(2048, 300 + n),
}


# ---- a real PKI: root → intermediate → signing CA ---------------------------------------------

def _hash(key: SigningKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _ca(
    key: SigningKey,
    *,
    kind: str,
    serial: int,
    issuer: tuple[x509.Certificate, SigningKey] | None = None,
    not_before: datetime = NOW - DAY,
    not_after: datetime = NOW + 365 * DAY,
    path_length: int | None = None,
) -> x509.Certificate:
    parent = issuer[0] if issuer else None
    builder = templates.ca_certificate(
        public_key=key.public_key(),
        subject=templates.ca_subject("cacerts tests", kind, 1, serial),
        trust_domain=SpiffeId.for_trust_domain(TRUST_DOMAIN),
        issuer=parent, serial=serial, not_before=not_before, not_after=not_after,
        path_length=path_length,
    )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, _hash(signer))


@dataclass(frozen=True)
class Pki:
    root_key: SigningKey
    root: x509.Certificate
    intermediate_key: SigningKey
    intermediate: x509.Certificate
    key: SigningKey
    cert: x509.Certificate

    def signing(self, n: int, *, key: SigningKey | None = None, not_before: datetime = NOW - DAY,
                not_after: datetime = NOW + 365 * DAY) -> Pki:
        """The same root and intermediate with another signing CA under them."""
        new_key = key or self.key
        cert = _ca(new_key, kind="signing", serial=0x3000 + n,
                   issuer=(self.intermediate, self.intermediate_key),
                   not_before=not_before, not_after=not_after, path_length=0)
        return replace(self, key=new_key, cert=cert)


def make_pki(kind: str = "ec", n: int = 0, *, root_serial: int = 0x1000) -> Pki:
    key_for = KEY_KINDS[kind]
    root_key, intermediate_key, key = key_for(3 * n), key_for(3 * n + 1), key_for(3 * n + 2)
    root = _ca(root_key, kind="root", serial=root_serial + n, not_after=NOW + 3650 * DAY)
    intermediate = _ca(intermediate_key, kind="intermediate", serial=0x2000 + n,
                       issuer=(root, root_key), not_after=NOW + 1000 * DAY, path_length=1)
    cert = _ca(key, kind="signing", serial=0x3000 + n, issuer=(intermediate, intermediate_key),
               path_length=0)
    return Pki(root_key, root, intermediate_key, intermediate, key, cert)


EC = make_pki("ec")
RSA = make_pki("rsa")
OTHER = make_pki("ec", 1, root_serial=0x1100)  # an unrelated root and chain


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def key_pem(key: PrivateKeyTypes, fmt: str = "pkcs8") -> bytes:
    private_format = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }[fmt]
    return key.private_bytes(Encoding.PEM, private_format, serialization.NoEncryption())


def write_cacerts(
    directory: Path,
    pki: Pki = EC,
    *,
    cert: bytes | None = None,
    key: bytes | None = None,
    roots: bytes | None = None,
    chain: bytes | None = None,
    key_format: str = "pkcs8",
    skip: Sequence[str] = (),
    key_mode: int = 0o600,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        CA_CERT: pem(pki.cert) if cert is None else cert,
        CA_KEY: key_pem(pki.key, key_format) if key is None else key,
        ROOT_CERT: pem(pki.root) if roots is None else roots,
        CERT_CHAIN: pem(pki.cert, pki.intermediate, pki.root) if chain is None else chain,
    }
    for name, data in files.items():
        path = directory / name
        if name in skip:
            path.unlink(missing_ok=True)
            continue
        path.write_bytes(data)
        path.chmod(key_mode if name == CA_KEY else 0o644)
    return directory


def refusal(directory: Path, now: datetime = NOW) -> str:
    with pytest.raises(PluggedCaError) as info:
        load_plugged_ca(directory, now)
    error = info.value
    assert error.__cause__ is None  # no parser traceback chained under it
    message = str(error)
    assert "-----BEGIN" not in message
    return message


def verify_leaf(ca: PluggedCa, leaf: x509.Certificate) -> None:
    """Path validation as a relying party does it: roots from the bundle, chain from the CA."""
    verifier = PolicyBuilder().store(Store(list(ca.roots))).time(NOW).build_client_verifier()
    verified = verifier.verify(leaf, [ca.certificate, *ca.chain])
    assert verified.chain[-1] in ca.roots


def issue_leaf(ca: PluggedCa) -> x509.Certificate:
    authority = ca.authority(generation_id=42)
    builder = templates.leaf_svid(
        public_key=ec_key("secp256r1", 399).public_key(), spiffe_id=CALLER,
        issuer=authority.certificate, serial=x509.random_serial_number(),
        not_before=NOW - timedelta(minutes=5), not_after=NOW + timedelta(hours=24),
    )
    return sign_leaf(authority, builder, CALLER)


# ---- good directories ------------------------------------------------------------------------

@pytest.mark.parametrize("key_format", ["pkcs8", "traditional"])
@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_good_directory_loads_and_signs_leaves_that_verify(tmp_path: Path, kind: str,
                                                          key_format: str) -> None:
    pki = EC if kind == "ec" else RSA
    ca = load_plugged_ca(write_cacerts(tmp_path, pki, key_format=key_format), NOW)

    assert ca.certificate == pki.cert
    assert ca.chain == (pki.intermediate,)
    assert ca.roots == (pki.root,)
    assert ca.anchor == pki.root
    assert ca.warnings == ()
    assert not ca.expires_soon
    assert ca.not_after == pki.cert.not_valid_after_utc
    assert ca.directory == tmp_path
    assert len(ca.fingerprint) == 64

    authority = ca.authority(generation_id=42)
    assert authority.generation_id == 42
    assert authority.chain == (pki.intermediate,)
    assert authority.bundle.roots == (pki.root,)
    leaf = issue_leaf(ca)
    verify_leaf(ca, leaf)
    leaf.verify_directly_issued_by(pki.cert)


def test_ec_key_with_ec_parameters_block_as_openssl_ecparam_writes_it(tmp_path: Path) -> None:
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    write_cacerts(tmp_path, key=params + key_pem(EC.key, "traditional"))
    assert load_plugged_ca(tmp_path, NOW).private_key.private_numbers() == EC.key.private_numbers()


def test_chain_may_stop_below_the_root_when_its_last_certificate_is_issued_by_one(tmp_path: Path) -> None:
    ca = load_plugged_ca(write_cacerts(tmp_path, chain=pem(EC.cert, EC.intermediate)), NOW)
    assert ca.chain == (EC.intermediate,)
    assert ca.anchor == EC.root
    verify_leaf(ca, issue_leaf(ca))


def test_root_cert_with_two_roots_is_valid_and_both_are_published(tmp_path: Path) -> None:
    for roots in (pem(OTHER.root, EC.root), pem(EC.root, OTHER.root)):
        ca = load_plugged_ca(write_cacerts(tmp_path, roots=roots), NOW)
        assert set(ca.roots) == {EC.root, OTHER.root}
        assert ca.anchor == EC.root
        assert ca.warnings == ()
        bundle = ca.authority(1).bundle.pem.encode()
        assert bundle == roots
        verify_leaf(ca, issue_leaf(ca))
    # also with the chain stopping at the intermediate: the anchor is found among several
    ca = load_plugged_ca(write_cacerts(tmp_path, roots=pem(OTHER.root, EC.root),
                                       chain=pem(EC.cert, EC.intermediate)), NOW)
    assert ca.anchor == EC.root


def test_duplicate_and_expired_extra_roots_are_warned_about_not_refused(tmp_path: Path) -> None:
    old_key = ec_key("secp256r1", 390)
    old_root = _ca(old_key, kind="root", serial=0x1999, not_before=NOW - 400 * DAY,
                   not_after=NOW - 10 * DAY)
    ca = load_plugged_ca(write_cacerts(tmp_path, roots=pem(EC.root, EC.root, old_root)), NOW)
    assert ca.roots == (EC.root, old_root)
    assert any("more than once" in w for w in ca.warnings)
    assert any("expired" in w and "g1" in w for w in ca.warnings)


def test_signing_certificate_that_is_itself_the_root(tmp_path: Path) -> None:
    """Istio's simplest plug-in: ca-cert.pem = root-cert.pem = cert-chain.pem."""
    write_cacerts(tmp_path, cert=pem(EC.root), key=key_pem(EC.root_key),
                  roots=pem(EC.root), chain=pem(EC.root))
    ca = load_plugged_ca(tmp_path, NOW)
    assert ca.chain == ()
    assert ca.anchor == EC.root
    verify_leaf(ca, issue_leaf(ca))


def test_extra_certificates_in_ca_cert_and_after_the_root_are_ignored_with_warnings(tmp_path: Path) -> None:
    write_cacerts(tmp_path, cert=pem(EC.cert, EC.intermediate),
                  chain=pem(EC.cert, EC.intermediate, EC.root, OTHER.root))
    ca = load_plugged_ca(tmp_path, NOW)
    assert ca.certificate == EC.cert
    assert ca.chain == (EC.intermediate,)
    assert any(CA_CERT in w and "only the first" in w for w in ca.warnings)
    assert any("continues past the root" in w for w in ca.warnings)


def test_comments_outside_pem_blocks_are_ignored(tmp_path: Path) -> None:
    roots = b"# bundle for cluster.local\nsubject=O=cacerts tests\n" + pem(EC.root) + b"\n\n"
    ca = load_plugged_ca(write_cacerts(tmp_path, roots=roots), NOW)
    assert ca.roots == (EC.root,)


# ---- all four or none ------------------------------------------------------------------------

@pytest.mark.parametrize("missing", CA_FILES)
def test_a_missing_file_is_named_exactly(tmp_path: Path, missing: str) -> None:
    message = refusal(write_cacerts(tmp_path, skip=[missing]))
    assert f"missing {missing} (" in message
    assert "all four" in message


def test_several_missing_files_are_all_named(tmp_path: Path) -> None:
    message = refusal(write_cacerts(tmp_path, skip=[CA_KEY, CERT_CHAIN]))
    assert f"missing {CA_KEY}, {CERT_CHAIN} (" in message


def test_no_files_at_all_is_a_distinct_error(tmp_path: Path) -> None:
    for directory in (tmp_path, tmp_path / "does-not-exist"):
        with pytest.raises(PluggedCaMissing, match="no plugged-in CA files"):
            load_plugged_ca(directory, NOW)


def test_a_dangling_symlink_counts_as_missing(tmp_path: Path) -> None:
    write_cacerts(tmp_path, skip=[CA_KEY])
    (tmp_path / CA_KEY).symlink_to(tmp_path / "..data" / CA_KEY)
    assert f"missing {CA_KEY} (" in refusal(tmp_path)


def test_naive_now_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        load_plugged_ca(write_cacerts(tmp_path), NOW.replace(tzinfo=None))


# ---- the key ---------------------------------------------------------------------------------

def test_key_that_does_not_match_the_certificate(tmp_path: Path) -> None:
    for wrong in (OTHER.key, RSA.key, EC.intermediate_key):
        message = refusal(write_cacerts(tmp_path, key=key_pem(wrong)))
        assert f"{CA_KEY} does not match {CA_CERT}" in message


def test_rsa_ca_with_another_rsa_key(tmp_path: Path) -> None:
    message = refusal(write_cacerts(tmp_path, RSA, key=key_pem(RSA.root_key, "traditional")))
    assert "does not match" in message


def test_encrypted_key_is_refused(tmp_path: Path) -> None:
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        encrypted = EC.key.private_bytes(Encoding.PEM, fmt,
                                         serialization.BestAvailableEncryption(b"secret"))
        message = refusal(write_cacerts(tmp_path, key=encrypted))
        assert "encrypted" in message


def test_key_of_an_unsupported_type_is_refused(tmp_path: Path) -> None:
    message = refusal(write_cacerts(tmp_path, key=key_pem(ed25519.Ed25519PrivateKey.generate())))
    assert "unsupported key type" in message


def test_two_keys_in_the_key_file_are_ambiguous(tmp_path: Path) -> None:
    message = refusal(write_cacerts(tmp_path, key=key_pem(EC.key) + key_pem(OTHER.key)))
    assert "exactly one PEM private key, found 2" in message


def test_messages_about_the_key_never_contain_key_material(tmp_path: Path) -> None:
    good = key_pem(EC.key)
    body_lines = [line for line in good.splitlines() if line and not line.startswith(b"-----")]
    corrupted = good.replace(body_lines[1], body_lines[1][::-1])
    for bad in (corrupted, good[: len(good) // 2], key_pem(OTHER.key)):
        message = refusal(write_cacerts(tmp_path, key=bad)).encode()
        for line in body_lines:
            assert line[:16] not in message


# ---- the signing certificate -----------------------------------------------------------------

def _non_ca_signing(pki: Pki, *, ca: bool, cert_sign: bool) -> x509.Certificate:
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not a ca")]))
        .issuer_name(pki.intermediate.subject)
        .public_key(pki.key.public_key())
        .serial_number(0x4444)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 100 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
    )
    return builder.sign(pki.intermediate_key, hashes.SHA256())


@pytest.mark.parametrize(("ca", "cert_sign", "expected"), [
    (False, True, "is not a CA certificate"),
    (False, False, "is not a CA certificate"),
    (True, False, "lacks keyUsage keyCertSign"),
])
def test_ca_cert_that_cannot_sign_certificates(tmp_path: Path, ca: bool, cert_sign: bool,
                                               expected: str) -> None:
    cert = _non_ca_signing(EC, ca=ca, cert_sign=cert_sign)
    message = refusal(write_cacerts(tmp_path, cert=pem(cert),
                                    chain=pem(cert, EC.intermediate, EC.root)))
    assert CA_CERT in message and expected in message


def test_expired_signing_certificate(tmp_path: Path) -> None:
    expired = EC.signing(1, not_before=NOW - 100 * DAY, not_after=NOW - DAY)
    message = refusal(write_cacerts(tmp_path, expired))
    assert f"{CA_CERT} (" in message and "expired at" in message


def test_signing_certificate_not_yet_valid(tmp_path: Path) -> None:
    future = EC.signing(2, not_before=NOW + DAY, not_after=NOW + 100 * DAY)
    message = refusal(write_cacerts(tmp_path, future))
    assert "is not valid until" in message


def test_expired_intermediate_is_refused_too(tmp_path: Path) -> None:
    intermediate = _ca(EC.intermediate_key, kind="intermediate", serial=0x2555,
                       issuer=(EC.root, EC.root_key), not_before=NOW - 300 * DAY,
                       not_after=NOW - DAY, path_length=1)
    pki = replace(EC, intermediate=intermediate).signing(7)  # valid itself
    message = refusal(write_cacerts(tmp_path, pki))
    assert "intermediate" in message and "expired at" in message


def test_near_expiry_is_a_warning_and_a_field(tmp_path: Path) -> None:
    soon = EC.signing(3, not_after=NOW + 10 * DAY)
    ca = load_plugged_ca(write_cacerts(tmp_path, soon), NOW)
    assert ca.expires_soon
    assert ca.not_after == NOW + 10 * DAY
    assert [w for w in ca.warnings if "expires in 10 day(s)" in w and CA_CERT in w]

    later = EC.signing(4, not_after=NOW + 40 * DAY)
    ca = load_plugged_ca(write_cacerts(tmp_path, later), NOW)
    assert not ca.expires_soon and ca.warnings == ()
    ca = load_plugged_ca(tmp_path, NOW, expiry_warning=60 * DAY)
    assert ca.expires_soon


def test_near_expiry_of_the_intermediate_counts_too(tmp_path: Path) -> None:
    intermediate = _ca(EC.intermediate_key, kind="intermediate", serial=0x2666,
                       issuer=(EC.root, EC.root_key), not_after=NOW + 5 * DAY, path_length=1)
    pki = replace(EC, intermediate=intermediate)
    pki = pki.signing(5, not_after=NOW + 4 * DAY)
    ca = load_plugged_ca(write_cacerts(tmp_path, pki), NOW)
    assert ca.expires_soon
    assert len([w for w in ca.warnings if "expires in" in w]) == 2


# ---- the chain -------------------------------------------------------------------------------

def test_chain_out_of_order(tmp_path: Path) -> None:
    message = refusal(write_cacerts(tmp_path, chain=pem(EC.cert, EC.root, EC.intermediate)))
    assert "out of order" in message and "certificate #1" in message and "certificate #2" in message
    message = refusal(write_cacerts(tmp_path, chain=pem(EC.cert, EC.intermediate, OTHER.intermediate,
                                                        EC.root)))
    assert "certificate #2" in message and "certificate #3" in message


def test_chain_that_does_not_start_with_ca_cert(tmp_path: Path) -> None:
    for chain in (pem(EC.intermediate, EC.root), pem(EC.root, EC.intermediate, EC.cert)):
        message = refusal(write_cacerts(tmp_path, chain=chain))
        assert f"must start with the certificate in {CA_CERT}" in message


def test_chain_missing_the_intermediate(tmp_path: Path) -> None:
    message = refusal(write_cacerts(tmp_path, chain=pem(EC.cert, EC.root)))
    assert "out of order or broken" in message


def test_chain_not_reaching_any_root(tmp_path: Path) -> None:
    message = refusal(write_cacerts(tmp_path, roots=pem(OTHER.root)))
    assert "does not reach a root" in message and "self-signed root that is not in" in message

    message = refusal(write_cacerts(tmp_path, roots=pem(OTHER.root),
                                    chain=pem(EC.cert, EC.intermediate)))
    assert "does not reach a root" in message and "not issued by any root" in message


def test_chain_from_another_pki_entirely(tmp_path: Path) -> None:
    message = refusal(write_cacerts(tmp_path, chain=pem(EC.cert, OTHER.intermediate, OTHER.root)))
    assert "is not issued by certificate #2" in message


def test_root_with_the_same_name_but_another_key_is_not_an_anchor(tmp_path: Path) -> None:
    impostor_key = ec_key("secp256r1", 391)
    impostor = _ca(impostor_key, kind="root", serial=0x1000, not_after=NOW + 3650 * DAY)
    assert impostor.subject == EC.root.subject
    message = refusal(write_cacerts(tmp_path, roots=pem(impostor),
                                    chain=pem(EC.cert, EC.intermediate)))
    assert "does not reach a root" in message


def test_path_length_constraint_is_enforced(tmp_path: Path) -> None:
    intermediate = _ca(EC.intermediate_key, kind="intermediate", serial=0x2777,
                       issuer=(EC.root, EC.root_key), path_length=0)
    pki = replace(EC, intermediate=intermediate).signing(6)
    message = refusal(write_cacerts(tmp_path, pki))
    assert "allows 0 CA certificate(s) below it, the chain has 1" in message


def test_intermediate_that_is_not_a_ca(tmp_path: Path) -> None:
    fake = _non_ca_signing(EC, ca=False, cert_sign=True)  # issued by the intermediate, CA:false
    fake_key = EC.key
    below_key = ec_key("secp256r1", 392)
    below = (
        x509.CertificateBuilder()
        .subject_name(templates.ca_subject("cacerts tests", "signing", 9, 9))
        .issuer_name(fake.subject)
        .public_key(below_key.public_key())
        .serial_number(0x5555)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(fake_key, hashes.SHA256())
    )
    message = refusal(write_cacerts(tmp_path, cert=pem(below), key=key_pem(below_key),
                                    chain=pem(below, fake, EC.intermediate, EC.root)))
    assert "issues certificates but is not a CA" in message


# ---- garbage in every file -------------------------------------------------------------------

def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


GARBAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda good: b"",
    "text": lambda good: b"this is not PEM at all\n",
    "binary": lambda good: os.urandom(64),
    "truncated": _truncated,
    "bad-base64": lambda good: good.replace(good.splitlines()[2], b"!!!!" * 16),
    "bad-der": lambda good: good.splitlines()[0] + b"\nAAAAAAAA\n" + good.splitlines()[-1] + b"\n",
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
@pytest.mark.parametrize("name", CA_FILES)
def test_garbage_in_each_file_is_refused_by_name(tmp_path: Path, name: str, garbage: str) -> None:
    write_cacerts(tmp_path)
    good = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(GARBAGE[garbage](good))
    message = refusal(tmp_path)
    assert message.startswith(name) or f"{name} " in message


def test_a_half_written_bundle_never_silently_loses_a_root(tmp_path: Path) -> None:
    """Truncated after the first root: refused, not loaded with one root fewer."""
    both = pem(EC.root, OTHER.root)
    message = refusal(write_cacerts(tmp_path, roots=both[: len(both) - 200]))
    assert ROOT_CERT in message and "unterminated" in message


def test_a_private_key_in_a_certificate_file_is_refused(tmp_path: Path) -> None:
    message = refusal(write_cacerts(tmp_path, chain=pem(EC.cert, EC.intermediate) + key_pem(EC.key)))
    assert f"{CERT_CHAIN} block #3 is a 'PRIVATE KEY'" in message


def test_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cacerts(tmp_path)
    real_open = Path.open

    def guarded_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == CA_KEY:  # as root, chmod 0 would not stop the read
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded_open)
    message = refusal(tmp_path)
    assert message == f"cannot read {tmp_path / CA_KEY}: Permission denied"


def test_a_directory_in_place_of_a_file_counts_as_missing(tmp_path: Path) -> None:
    write_cacerts(tmp_path, skip=[ROOT_CERT])
    (tmp_path / ROOT_CERT).mkdir()
    assert f"missing {ROOT_CERT} (" in refusal(tmp_path)


# ---- permissions -----------------------------------------------------------------------------

def test_loose_key_permissions_warn_and_still_load(tmp_path: Path) -> None:
    ca = load_plugged_ca(write_cacerts(tmp_path, key_mode=0o644), NOW)
    assert [w for w in ca.warnings if CA_KEY in w and "0644" in w and "defaultMode" in w]
    ca = load_plugged_ca(write_cacerts(tmp_path, key_mode=0o400), NOW)
    assert ca.warnings == ()


def test_group_writable_certificate_files_warn(tmp_path: Path) -> None:
    write_cacerts(tmp_path)
    (tmp_path / ROOT_CERT).chmod(0o664)
    ca = load_plugged_ca(tmp_path, NOW)
    assert ca.warnings == (f"{ROOT_CERT} is writable by group or others (mode 0664)",)


# ---- fingerprints ----------------------------------------------------------------------------

def test_content_fingerprint_depends_on_every_file_and_only_on_content(tmp_path: Path) -> None:
    first = load_plugged_ca(write_cacerts(tmp_path / "a"), NOW).fingerprint
    assert load_plugged_ca(write_cacerts(tmp_path / "b", key_mode=0o644), NOW).fingerprint == first
    seen = {first}
    variants = [
        write_cacerts(tmp_path / "cert", cert=pem(EC.cert) + b"\n"),
        write_cacerts(tmp_path / "key", key=key_pem(EC.key, "traditional")),
        write_cacerts(tmp_path / "roots", roots=pem(EC.root, OTHER.root)),
        write_cacerts(tmp_path / "chain", chain=pem(EC.cert, EC.intermediate)),
    ]
    for directory in variants:
        fingerprint = load_plugged_ca(directory, NOW).fingerprint
        assert fingerprint not in seen
        seen.add(fingerprint)


def test_directory_fingerprint(tmp_path: Path) -> None:
    assert directory_fingerprint(tmp_path / "absent") is None
    assert directory_fingerprint(tmp_path) is None
    write_cacerts(tmp_path, skip=[CA_KEY, ROOT_CERT, CERT_CHAIN])
    partial = directory_fingerprint(tmp_path)
    assert partial is not None
    write_cacerts(tmp_path)
    full = directory_fingerprint(tmp_path)
    assert full not in (None, partial)
    assert directory_fingerprint(tmp_path) == full

    # same size, same mtime, different bytes: the content hash still tells them apart
    path = tmp_path / ROOT_CERT
    stamp = path.stat()
    data = bytearray(path.read_bytes())
    data[40] = ord("A") if data[40] != ord("A") else ord("B")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert directory_fingerprint(tmp_path) != full

    # same bytes, new mtime: a change to look at (the watcher then sees identical content)
    path.write_bytes(pem(EC.root))
    restored = directory_fingerprint(tmp_path)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    assert directory_fingerprint(tmp_path) != restored


# ---- the watcher -----------------------------------------------------------------------------

def _bump_mtimes(directory: Path, seconds: int) -> None:
    """Make a rewrite visible even on filesystems with coarse timestamps."""
    for name in CA_FILES:
        path = directory / name
        if path.exists():
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_watcher_loads_first_then_ignores_unchanged_files(tmp_path: Path) -> None:
    write_cacerts(tmp_path)
    watcher = PluggedCaWatcher(tmp_path)
    assert watcher.current is None and watcher.directory == tmp_path
    first = watcher.poll(NOW)
    assert first is not None and first.certificate == EC.cert
    assert watcher.current is first
    assert watcher.poll(NOW) is None
    assert watcher.poll(NOW + DAY) is None
    assert watcher.last_error is None


def test_watcher_started_with_a_loaded_ca_does_not_reload_it(tmp_path: Path) -> None:
    loaded = load_plugged_ca(write_cacerts(tmp_path), NOW)
    watcher = PluggedCaWatcher(tmp_path, loaded)
    assert watcher.poll(NOW) is None
    assert watcher.current is loaded


def test_watcher_ignores_a_rewrite_with_the_same_bytes(tmp_path: Path) -> None:
    write_cacerts(tmp_path)
    watcher = PluggedCaWatcher(tmp_path)
    first = watcher.poll(NOW)
    write_cacerts(tmp_path)
    _bump_mtimes(tmp_path, 5)
    assert watcher.poll(NOW) is None
    assert watcher.current is first


def test_watcher_swaps_in_changed_good_files(tmp_path: Path) -> None:
    write_cacerts(tmp_path)
    watcher = PluggedCaWatcher(tmp_path)
    first = watcher.poll(NOW)
    rotated = EC.signing(10, key=ec_key("secp256r1", 393))
    write_cacerts(tmp_path, rotated, roots=pem(EC.root, OTHER.root))
    second = watcher.poll(NOW)
    assert second is not None and second is not first
    assert second.certificate == rotated.cert
    assert second.fingerprint != first.fingerprint  # type: ignore[union-attr]
    assert watcher.current is second
    assert watcher.poll(NOW) is None
    verify_leaf(second, issue_leaf(second))


def test_watcher_keeps_the_old_ca_when_the_new_files_are_broken(tmp_path: Path) -> None:
    write_cacerts(tmp_path)
    watcher = PluggedCaWatcher(tmp_path)
    first = watcher.poll(NOW)
    assert first is not None

    # half-way through a swap: the new certificate is there, its key is not yet
    rotated = EC.signing(11, key=ec_key("secp256r1", 394))
    (tmp_path / CA_CERT).write_bytes(pem(rotated.cert))
    assert watcher.poll(NOW) is None
    assert watcher.current is first
    assert watcher.last_error is not None and "does not match" in watcher.last_error
    assert "keeping the loaded CA" in watcher.last_error
    assert watcher.last_error_at == NOW

    # still broken later, differently: the error is replaced, the CA still kept
    (tmp_path / CERT_CHAIN).write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB")
    assert watcher.poll(NOW + timedelta(minutes=1)) is None
    assert watcher.current is first
    assert watcher.last_error is not None and CERT_CHAIN in watcher.last_error
    assert watcher.last_error_at == NOW + timedelta(minutes=1)

    # the same error again keeps its first timestamp
    assert watcher.poll(NOW + timedelta(minutes=2)) is None
    assert watcher.last_error_at == NOW + timedelta(minutes=1)

    # the swap completes: the new CA is taken and the error cleared
    write_cacerts(tmp_path, rotated)
    _bump_mtimes(tmp_path, 7)
    second = watcher.poll(NOW + timedelta(minutes=3))
    assert second is not None and second.certificate == rotated.cert
    assert watcher.current is second
    assert watcher.last_error is None and watcher.last_error_at is None


def test_watcher_clears_the_error_when_the_known_good_files_come_back(tmp_path: Path) -> None:
    write_cacerts(tmp_path)
    watcher = PluggedCaWatcher(tmp_path)
    first = watcher.poll(NOW)
    backup = tmp_path.parent / "backup"
    shutil.copytree(tmp_path, backup, copy_function=shutil.copy2)
    (tmp_path / CA_KEY).write_bytes(b"garbage")
    assert watcher.poll(NOW) is None and watcher.last_error is not None
    shutil.copy2(backup / CA_KEY, tmp_path / CA_KEY)
    assert watcher.poll(NOW) is None
    assert watcher.current is first
    assert watcher.last_error is None


def test_watcher_records_removed_files_and_keeps_the_ca(tmp_path: Path) -> None:
    write_cacerts(tmp_path)
    watcher = PluggedCaWatcher(tmp_path)
    first = watcher.poll(NOW)

    (tmp_path / CA_KEY).unlink()
    assert watcher.poll(NOW) is None
    assert watcher.current is first
    assert watcher.last_error is not None and f"missing {CA_KEY} (" in watcher.last_error

    for name in CA_FILES:
        (tmp_path / name).unlink(missing_ok=True)
    assert watcher.poll(NOW) is None
    assert watcher.current is first
    assert watcher.last_error is not None
    assert "no plugged-in CA files" in watcher.last_error and "keeping the loaded CA" in watcher.last_error


def test_watcher_retries_a_set_that_becomes_valid_with_time(tmp_path: Path) -> None:
    future = EC.signing(12, not_before=NOW + timedelta(hours=1), not_after=NOW + 100 * DAY)
    write_cacerts(tmp_path, future)
    watcher = PluggedCaWatcher(tmp_path)
    assert watcher.poll(NOW) is None
    assert watcher.current is None
    assert watcher.last_error is not None and "not valid until" in watcher.last_error
    assert "keeping" not in watcher.last_error
    loaded = watcher.poll(NOW + timedelta(hours=2))
    assert loaded is not None and watcher.last_error is None


def test_watcher_without_any_files_records_that(tmp_path: Path) -> None:
    watcher = PluggedCaWatcher(tmp_path)
    assert watcher.poll(NOW) is None
    assert watcher.last_error == f"no plugged-in CA files in {tmp_path}"


def test_watcher_follows_a_kubernetes_style_symlink_swap(tmp_path: Path) -> None:
    """Secret volumes: files are links into `..data`, itself a link swapped atomically."""
    volume = tmp_path / "cacerts"
    volume.mkdir()
    write_cacerts(volume / "..2026_03_01_a")
    (volume / "..data").symlink_to("..2026_03_01_a")
    for name in CA_FILES:
        (volume / name).symlink_to(f"..data/{name}")
    watcher = PluggedCaWatcher(volume)
    first = watcher.poll(NOW)
    assert first is not None

    rotated = EC.signing(13, key=ec_key("secp256r1", 395))
    write_cacerts(volume / "..2026_03_01_b", rotated)
    (volume / "..data_tmp").symlink_to("..2026_03_01_b")
    os.replace(volume / "..data_tmp", volume / "..data")
    second = watcher.poll(NOW)
    assert second is not None and second.certificate == rotated.cert
