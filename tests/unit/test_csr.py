"""CSR policy: what a workload may ask for, and the message when it asks for too much."""

from __future__ import annotations

import base64
import ipaddress
import re
import textwrap
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from meshca.core.csr import MAX_CSR_BYTES, check_csr
from meshca.core.spiffe import SpiffeId
from meshca.errors import InvalidRequest
from tests.unit.pki import CALLER, csr_pem, der, ec_key, ed448_key, ed25519_key, rsa_key, seq

URI = x509.UniformResourceIdentifier


def _refused(pem: str, message: str, identity: SpiffeId = CALLER) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        check_csr(pem, identity)


def _key_usage(**on: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


def _pem(der_bytes: bytes) -> str:
    body = textwrap.fill(base64.b64encode(der_bytes).decode(), 64)
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"


# ---- accepted shapes ------------------------------------------------------------------------

KEYS: list[tuple[str, Any, str]] = [
    ("p256", lambda: ec_key("secp256r1"), "ECDSA secp256r1"),
    ("p384", lambda: ec_key("secp384r1"), "ECDSA secp384r1"),
    ("rsa2048", lambda: rsa_key(2048), "RSA 2048"),
    ("rsa4096", lambda: rsa_key(4096), "RSA 4096"),
    ("ed25519", lambda: ed25519_key(), "Ed25519"),
]


@pytest.mark.parametrize(("make_key", "description"), [(k, d) for _, k, d in KEYS],
                         ids=[i for i, _, _ in KEYS])
@pytest.mark.parametrize("with_san", [False, True], ids=["no-san", "own-id"])
def test_accepted_keys_with_no_san_or_exactly_the_callers_id(
    make_key: Any, description: str, with_san: bool
) -> None:
    key = make_key()
    pem = csr_pem(key, sans=[URI(CALLER.uri)] if with_san else ())
    checked = check_csr(pem, CALLER)
    assert checked.public_key == key.public_key()
    assert checked.key_description == description


def test_harmless_extensions_and_a_subject_are_accepted() -> None:
    pem = csr_pem(
        ec_key(),
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]),
        sans=[URI(CALLER.uri)],
        extensions=[
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(digital_signature=True, key_encipherment=True), True),
        ],
    )
    assert check_csr(pem, CALLER).key_description == "ECDSA secp256r1"


def test_pem_with_surrounding_text_is_accepted() -> None:
    pem = "a note before\n" + csr_pem(ec_key()) + "and after\n"
    assert check_csr(pem, CALLER).public_key == ec_key().public_key()


# ---- refused: the envelope ------------------------------------------------------------------

def test_empty_csr() -> None:
    _refused("", "csr is empty")


def test_oversized_csr_is_refused_by_byte_count() -> None:
    _refused("x" * (MAX_CSR_BYTES + 1), f"csr is {MAX_CSR_BYTES + 1} bytes; at most {MAX_CSR_BYTES}")
    # Counted in UTF-8 bytes, not characters.
    text = "\u00e9" * (MAX_CSR_BYTES // 2 + 1)
    assert len(text) <= MAX_CSR_BYTES
    _refused(text, f"csr is {len(text.encode())} bytes")


def test_csr_of_exactly_the_limit_is_not_refused_for_size() -> None:
    _refused("x" * MAX_CSR_BYTES, "not a PEM 'CERTIFICATE REQUEST' block")


@pytest.mark.parametrize(
    "pem",
    [
        "hello",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "-----BEGIN NEW CERTIFICATE REQUEST-----\nMIIB\n-----END NEW CERTIFICATE REQUEST-----\n",
    ],
)
def test_not_a_pem_certificate_request(pem: str) -> None:
    _refused(pem, "csr is not a PEM 'CERTIFICATE REQUEST' block")


def test_der_instead_of_pem_is_refused() -> None:
    raw = x509.load_pem_x509_csr(csr_pem(ec_key()).encode()).public_bytes(Encoding.DER)
    _refused(raw.decode("latin-1"), "not a PEM 'CERTIFICATE REQUEST' block")


@pytest.mark.parametrize(
    "pem",
    [
        "-----BEGIN CERTIFICATE REQUEST-----\nnot base64 !!!\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\n",
    ],
)
def test_unparseable_csr(pem: str) -> None:
    _refused(pem, "csr could not be parsed as PEM PKCS#10")


@pytest.mark.parametrize("make_key", [lambda: ec_key(), lambda: rsa_key(2048), lambda: ed25519_key()],
                         ids=["p256", "rsa", "ed25519"])
def test_tampered_signature_is_refused(make_key: Any) -> None:
    good = x509.load_pem_x509_csr(csr_pem(make_key()).encode()).public_bytes(Encoding.DER)
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    _refused(_pem(bad), "csr signature does not verify")


def test_csr_signed_by_another_key_is_refused() -> None:
    # Take the request body of one key and the signature of another.
    mine = x509.load_pem_x509_csr(csr_pem(ec_key("secp256r1", 1)).encode())
    other_key = ec_key("secp256r1", 2)
    signature = other_key.sign(mine.tbs_certrequest_bytes, ec.ECDSA(hashes.SHA256()))
    ecdsa_sha256 = der(0x06, bytes.fromhex("2a8648ce3d040302"))
    forged = seq(mine.tbs_certrequest_bytes, seq(ecdsa_sha256), der(0x03, b"\x00" + signature))
    _refused(_pem(forged), "csr signature does not verify")


# ---- refused: keys --------------------------------------------------------------------------

@pytest.mark.parametrize("curve", ["secp521r1", "secp256k1"])
def test_other_curves_are_refused(curve: str) -> None:
    _refused(csr_pem(ec_key(curve)), f"csr key curve {curve} is not allowed; use P-256 or P-384")


def test_small_rsa_key_is_refused() -> None:
    _refused(csr_pem(rsa_key(1024)), "csr RSA key is 1024 bits; 2048 to 8192 are allowed")


def test_ed448_key_is_refused() -> None:
    _refused(csr_pem(ed448_key()), "csr key type Ed448PublicKey is not allowed")


def test_dsa_key_is_refused() -> None:
    key = dsa.generate_private_key(2048)
    _refused(csr_pem(key), "csr key type DSAPublicKey is not allowed")


def test_unloadable_public_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # No real request reaches this branch (its signature check fails first), so fake one.
    class Unloadable:
        is_signature_valid = True

        def public_key(self) -> None:
            raise ValueError("unsupported key algorithm")

    monkeypatch.setattr(x509, "load_pem_x509_csr", lambda raw: Unloadable())
    _refused(csr_pem(ec_key()), "csr public key type is not supported")


def test_signature_check_that_raises_counts_as_not_verifying(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unverifiable:
        @property
        def is_signature_valid(self) -> bool:
            raise NotImplementedError("signature algorithm")

    monkeypatch.setattr(x509, "load_pem_x509_csr", lambda raw: Unverifiable())
    _refused(csr_pem(ec_key()), "csr signature does not verify")


# ---- refused: extensions --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sans", "kinds"),
    [
        ([x509.DNSName("web.default.svc")], "DNSName"),
        ([URI(CALLER.uri), x509.DNSName("web")], "DNSName"),
        ([x509.IPAddress(ipaddress.ip_address("10.0.0.1")), x509.DNSName("a")], "DNSName, IPAddress"),
        ([x509.RFC822Name("web@example.org")], "RFC822Name"),
        ([x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))],
         "DirectoryName"),
    ],
)
def test_non_uri_sans_are_refused(sans: list[x509.GeneralName], kinds: str) -> None:
    _refused(csr_pem(ec_key(), sans=sans), f"csr carries SANs that are not allowed: {kinds}")


def test_two_uri_sans_are_refused_even_if_one_is_the_caller() -> None:
    sans = [URI(CALLER.uri), URI("spiffe://cluster.local/ns/default/sa/db")]
    _refused(csr_pem(ec_key(), sans=sans), "csr carries 2 URI SANs; at most one")


def test_the_same_uri_twice_is_refused() -> None:
    _refused(csr_pem(ec_key(), sans=[URI(CALLER.uri), URI(CALLER.uri)]), "csr carries 2 URI SANs")


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://cluster.local/ns/default/sa/db",
        "spiffe://cluster.local/ns/kube-system/sa/web",
        "spiffe://other.domain/ns/default/sa/web",
        "spiffe://cluster.local/ns/default/sa/Web",
        "spiffe://cluster.local/ns/default/sa/web/",
        "SPIFFE://cluster.local/ns/default/sa/web",
        "spiffe://cluster.local",
        "https://cluster.local/ns/default/sa/web",
    ],
)
def test_an_identity_other_than_the_callers_is_refused(uri: str) -> None:
    _refused(csr_pem(ec_key(), sans=[URI(uri)]), "csr asks for an identity other than the caller's")


def test_ca_request_is_refused() -> None:
    ext = (x509.BasicConstraints(ca=True, path_length=None), True)
    _refused(csr_pem(ec_key(), extensions=[ext]), "csr asks for a CA certificate (basicConstraints CA:true)")


@pytest.mark.parametrize(
    "usage",
    [
        _key_usage(digital_signature=True, key_cert_sign=True),
        _key_usage(digital_signature=True, crl_sign=True),
        _key_usage(key_cert_sign=True, crl_sign=True),
    ],
)
def test_signing_key_usages_are_refused(usage: x509.KeyUsage) -> None:
    _refused(csr_pem(ec_key(), extensions=[(usage, True)]), "csr asks for keyCertSign or cRLSign key usage")


def test_duplicate_extensions_are_refused() -> None:
    # No builder writes this, so assemble the request by hand: two basicConstraints.
    key = ec_key()
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    basic_constraints = seq(der(0x06, bytes.fromhex("551d13")), der(0x01, b"\xff"), der(0x04, seq()))
    extension_request = seq(
        der(0x06, bytes.fromhex("2a864886f70d01090e")),
        der(0x31, seq(basic_constraints, basic_constraints)),
    )
    info = seq(der(0x02, b"\x00"), seq(), spki, der(0xA0, extension_request))
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    request = seq(info, seq(der(0x06, bytes.fromhex("2a8648ce3d040302"))), der(0x03, b"\x00" + signature))
    assert x509.load_der_x509_csr(request).is_signature_valid
    _refused(_pem(request), "csr extensions could not be parsed")
