"""Hypothesis strategies for CreateCertificate (issue 17, item 1): structured mutation of the
CSR (key types and sizes, subject, SANs, extensions, signature hash, then its DER bytes and its
PEM armour), of the token (every claim, the header, the encoding, the size), of the Struct
metadata and of the requested lifetime.

Each input says which identity its token names (`identity`), when the claims name one, so that
the oracle can check the identity property on every success: the certificate names that
identity and nothing else, for the CSR's own key."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import string
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import strategies as st

from meshca.core import jwt
from tests.support import projected_claims

TRUST_DOMAIN = "cluster.local"
AUDIENCE = "istio-ca"
KEY_KINDS = ["ec-p256", "ec-p256", "ec-p256", "ec-p384", "ec-p521", "ec-secp256k1", "ec-p192",
             "rsa-1024", "rsa-2048", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519", "ed448"]
NAMES = ["default", "web", "kube-system", "istio-system", "a", "shop", "x" * 63, "x" * 64, "Web",
         "web.", "..", "a:b", "a/b", "ns-1", "", " ", "ü", "web\x00", "*"]
ACCOUNTS = ["web", "default", "admin", "cart", "istiod", "a" * 253, "a" * 254, "sa.with.dots",
            "", "a:b", "a/b", "UPPER", "../x"]
MAX_METADATA = 64 * 1024  # the server's --max-header-bytes default: the fuzz reaches past it


# Strategies built once: building them in each draw costs more than the draw.
_FRACTION = st.integers(0, 2**16 - 1)
_DER_OPS = st.sampled_from(("none",) * 6 + ("flip", "cut", "insert", "length", "repeat"))
_BYTE_XOR = st.integers(1, 255)
_INSERTED = st.binary(min_size=1, max_size=16)
_LENGTH_LIES = st.sampled_from((0x00, 0x7F, 0x80, 0x84, 0xFF))
_SPAN = st.integers(0, 64)
_REPEATS = st.integers(1, 4)
_TEXT_200 = st.text(max_size=200)
_TEXT_8 = st.text(max_size=8)
_PRINTABLE_100 = st.text(string.printable, max_size=100)
_HUGE = st.sampled_from((4096, 300_000))
_KEY_KIND = st.sampled_from(KEY_KINDS)
_NAMESPACE = st.sampled_from(NAMES) | st.text(max_size=12)
_ACCOUNT = st.sampled_from(ACCOUNTS) | st.text(max_size=12)
_MUTATIONS = st.integers(0, 3)
_ONE_IN_8 = st.integers(0, 7).map(lambda n: n == 0)
_ONE_IN_10 = st.integers(0, 9).map(lambda n: n == 0)
_ONE_IN_20 = st.integers(0, 19).map(lambda n: n == 0)
_BOOL = st.booleans()
_DEPTH = st.integers(10, 60)


_LENGTH_AT = st.sampled_from((1, 2, 3, 0))  # 0: where the mutation had landed
_ARMOURS = st.sampled_from(("pem",) * 8 + ("label", "two", "bare", "junk", "crlf", "text", "empty", "huge"))
_DATA = st.data()
_ATTRIBUTES = st.lists(st.sampled_from([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME,
                                        NameOID.COUNTRY_NAME]), max_size=2)
_HASHES: st.SearchStrategy[Any] = st.sampled_from([
    hashes.SHA256(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512(), hashes.SHA224(), hashes.SHA3_256()])
_COUNTRY = st.text(min_size=1, max_size=2)
_ATTRIBUTE = st.text(min_size=1, max_size=30)
_CLAIM_NAMES = st.sampled_from(["aud", "exp", "iat", "nbf", "iss", "sub", "jti", "kubernetes.io", "ns", "sa",
                                "extra", "times", "huge"])
_PADS = st.sampled_from((1000, 40_000, 200_000))
_TOKEN_HOW = st.sampled_from(("as-is",) * 6 + ("pad", "std", "space", "cut", "flip", "extra", "nosig",
                                               "garbage"))
_AUTH_HOW = st.sampled_from(("bearer",) * 8 + ("lower", "two-spaces", "no-scheme", "basic", "none",
                                               "twice", "other-first", "empty"))
_EXTRA_KEY = st.text(string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=20).filter(
    lambda k: not k.startswith("grpc-") and not k.endswith("-bin")
    and k not in ("authorization", "te", "host"))
_EXTRA = st.lists(st.tuples(_EXTRA_KEY | st.sampled_from(["clusterid", "x-forwarded-for"]),
                            st.text(string.printable.strip() + " ", max_size=40)), max_size=3)
_BIG_HEADER = st.sampled_from((8000, 64 * 1024 + 1000))
_STRUCT_KIND = st.sampled_from(("none",) * 6 + ("random", "impersonate", "deep"))


@cache
def private_key(kind: str) -> Any:
    """One key per kind for the whole run: generating RSA-4096 keys per input would measure
    the client, not the server."""
    family, _, size = kind.partition("-")
    if family == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(size))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    curves: dict[str, ec.EllipticCurve] = {
        "p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1(),
        "secp256k1": ec.SECP256K1(), "p192": ec.SECP192R1()}
    return ec.generate_private_key(curves[size])


def identity_of(namespace: str, account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{account}"


@dataclass(frozen=True, slots=True)
class CaInput:
    """One CreateCertificate call and what the oracle needs to judge its answer."""

    csr: str
    metadata: tuple[tuple[str, str], ...]
    validity: int
    struct: dict[str, Any] | None
    identity: str | None  # the identity the signed claims name, if they name one
    public_key_der: bytes | None  # the CSR's key, when the CSR was sent unmutated
    what: str  # a short label of the mutations, for the campaign's breakdown

    def size(self) -> int:
        return len(self.csr) + sum(len(k) + len(v) for k, v in self.metadata)


# ---- CSRs ---------------------------------------------------------------------------------

def _text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size)


def _uri(value: str) -> x509.GeneralName:
    # Unvalidated: a CSR may carry any string, and the server must judge it, not the client.
    return x509.UniformResourceIdentifier._init_without_validation(value)


_OWN = object()  # stands for the token's own identity, filled in by csrs()
_GENERAL_NAMES: st.SearchStrategy[Any] = st.one_of(
    st.just(_OWN),
    st.sampled_from([identity_of("kube-system", "admin"), identity_of("default", "other"),
                     "spiffe://evil.example/ns/default/sa/web", "SPIFFE://CLUSTER.LOCAL/ns/default/sa/web",
                     identity_of("default", "web") + "/x", identity_of("default", "web") + "?q",
                     "spiffe://cluster.local", "https://example.com", "x"]).map(_uri),
    st.text(string.printable, max_size=60).map(_uri),
    st.sampled_from(["web.default.svc", "localhost", "*.example.com", "a" * 300]).map(
        lambda name: x509.DNSName._init_without_validation(name)),
    st.sampled_from([ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("::1")]).map(x509.IPAddress),
    st.sampled_from(["a@example.com", "x"]).map(
        lambda name: x509.RFC822Name._init_without_validation(name)),
)
_NAME_LISTS = st.lists(_GENERAL_NAMES, max_size=3)


def _extensions() -> st.SearchStrategy[list[tuple[x509.ExtensionType, bool]]]:
    one: st.SearchStrategy[tuple[x509.ExtensionType, bool]] = st.one_of(
        st.tuples(st.booleans().map(lambda ca: x509.BasicConstraints(ca=ca, path_length=None)),
                  st.booleans()),
        st.tuples(st.just(x509.KeyUsage(True, False, True, False, False, True, True, False, False)),
                  st.booleans()),
        st.tuples(st.just(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING])),
                  st.booleans()),
        st.tuples(st.binary(max_size=40).map(
            lambda v: x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), v)),
            st.booleans()),
    )
    return st.lists(one, max_size=3, unique_by=lambda e: type(e[0]).__name__)


_EXTENSIONS = _extensions()


def _position(data: st.DataObject, length: int) -> int:
    """A position drawn independently of `length`: signatures (ECDSA's are random) change the
    length between runs, and Hypothesis wants the same draws for the same choices."""
    return data.draw(_FRACTION) * length // 2**16


def _mutate(der: bytes, data: st.DataObject) -> tuple[bytes, str]:
    """Byte-level mutation of DER: flip, cut, insert, change a length, repeat a slice."""
    op = data.draw(_DER_OPS)
    if op == "none" or not der:
        return der, "der-intact"
    at = _position(data, len(der))
    if op == "flip":
        return der[:at] + bytes([der[at] ^ data.draw(_BYTE_XOR)]) + der[at + 1:], "der-flip"
    if op == "cut":
        return der[:at], "der-cut"
    if op == "insert":
        return der[:at] + data.draw(_INSERTED) + der[at:], "der-insert"
    if op == "length":  # the second byte of the outer SEQUENCE, or any, set to a length lie
        at = data.draw(_LENGTH_AT) or at
        return der[:at] + bytes([data.draw(_LENGTH_LIES)]) \
            + der[at + 1:], "der-length"
    end = min(len(der), at + data.draw(_SPAN))
    return der[:end] + der[at:end] * data.draw(_REPEATS) + der[end:], "der-repeat"


def _armour(der: bytes, data: st.DataObject) -> tuple[str, str]:
    body = base64.encodebytes(der).decode()
    pem = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"
    how = data.draw(_ARMOURS)
    if how == "pem":
        return pem, "pem"
    if how == "label":
        return pem.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"), "pem-label"
    if how == "two":
        return pem + pem, "pem-twice"
    if how == "bare":
        return base64.b64encode(der).decode(), "base64-bare"
    if how == "junk":
        return data.draw(_text(20)) + pem + data.draw(_text(20)), "pem-junk"
    if how == "crlf":
        return pem.replace("\n", "\r\n"), "pem-crlf"
    if how == "text":
        return data.draw(_TEXT_200), "text"
    if how == "empty":
        return "", "empty"
    return pem + "A" * data.draw(_HUGE), "pem-huge"


@st.composite
def csrs(draw: st.DrawFn, own: str, *, bytes_too: bool = True) -> tuple[str, bytes | None, str]:
    """(the CSR text, its key's DER when sent unmutated, a label). Without `bytes_too`, only the
    structure varies (keys, names, extensions, hashes): the DER and its armour stay intact."""
    data = draw(_DATA)
    kind = draw(_KEY_KIND)
    key = private_key(kind)
    attrs = draw(_ATTRIBUTES)
    names = [_uri(own) if name is _OWN else name for name in draw(_NAME_LISTS)]
    exts = draw(_EXTENSIONS)
    hash_alg = draw(_HASHES)
    values = [draw(_COUNTRY if oid == NameOID.COUNTRY_NAME else _ATTRIBUTE) for oid in attrs]
    try:
        subject = [x509.NameAttribute(oid, value) for oid, value in zip(attrs, values, strict=True)]
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=draw(_BOOL))
        for ext, critical in exts:
            builder = builder.add_extension(ext, critical=critical)
        edwards = isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        csr = builder.sign(key, None if edwards else hash_alg)
    except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm):  # one it will not build
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
            private_key("ec-p256"), hashes.SHA256())
        kind = "fallback"
    if bytes_too:
        der, mutation = _mutate(csr.public_bytes(Encoding.DER), data)
        text, armour = _armour(der, data)
    else:
        mutation, armour = "der-intact", "pem"
        text = csr.public_bytes(Encoding.PEM).decode()
    intact = mutation == "der-intact" and armour in ("pem", "pem-crlf")
    key_der = csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) \
        if intact else None
    return text, key_der, f"{kind}/{mutation}/{armour}"


# ---- tokens -------------------------------------------------------------------------------

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63),
                          st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=6)


class TokenSigner:
    """Signs claims with the server's development issuer key (tests.support.signed_token)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, kid: str) -> None:
        self._key, self._kid = key, kid

    def sign(self, claims: dict[str, Any], header: dict[str, Any] | None) -> str:
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        head = header if header is not None else {"alg": "ES256", "kid": self._kid, "typ": "JWT"}
        signing_input = (jwt.b64url_encode(json.dumps(head).encode()) + "."
                         + jwt.b64url_encode(json.dumps(claims, default=str).encode()))
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{jwt.b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    @property
    def kid(self) -> str:
        return self._kid


def _claims_identity(claims: dict[str, Any]) -> str | None:
    """The identity the claims name, if `sub` and `kubernetes.io` agree on one."""
    sub = claims.get("sub")
    k8s = claims.get("kubernetes.io")
    if not isinstance(sub, str) or not isinstance(k8s, dict):
        return None
    parts = sub.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        return None
    sa = k8s.get("serviceaccount")
    if k8s.get("namespace") != parts[2] or not isinstance(sa, dict) or sa.get("name") != parts[3]:
        return None
    return identity_of(parts[2], parts[3])


_AUDIENCES = st.sampled_from([[AUDIENCE, "x"], "istio-ca", [], ["x"], None, [AUDIENCE] * 50]) | json_values
# An offset from now, or a value no clock reads (absolute, or not a number).
_TIME_OFFSETS = st.integers(-10**6, 10**6) | st.sampled_from([2**63, -(2**63), 1e300, "soon", None])
_ISSUERS = st.sampled_from(["kubernetes/serviceaccount", "https://evil", "", None]) | json_values
_NAMES = st.sampled_from(NAMES)
_ACCOUNT_OBJECTS = st.sampled_from([{"name": "admin"}, {"uid": "x"}, "web", None]) | json_values
_NOT_OBJECTS: st.SearchStrategy[Any] = json_values.filter(lambda v: not isinstance(v, dict)) | st.just({})


@st.composite
def claims(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    namespace = draw(_NAMESPACE)
    account = draw(_ACCOUNT)
    now = time.time()  # at each draw: a campaign outlives any one token's lifetime
    body = projected_claims(namespace, account, now=now)
    labels = []
    for _ in range(draw(_MUTATIONS)):
        name = draw(_CLAIM_NAMES)
        labels.append(name)
        if name == "aud":
            body["aud"] = draw(_AUDIENCES)
        elif name in ("exp", "iat", "nbf"):
            offset = draw(_TIME_OFFSETS)
            body[name] = int(now) + offset if isinstance(offset, int) and abs(offset) <= 10**6 else offset
        elif name == "iss":
            body["iss"] = draw(_ISSUERS)
        elif name in ("sub", "jti"):
            body[name] = draw(json_values)
        elif name == "kubernetes.io":
            body["kubernetes.io"] = draw(json_values)
        elif name == "ns" and isinstance(body["kubernetes.io"], dict):  # the two namespaces disagree
            body["kubernetes.io"]["namespace"] = draw(_NAMES)
        elif name == "sa" and isinstance(body["kubernetes.io"], dict):
            body["kubernetes.io"]["serviceaccount"] = draw(_ACCOUNT_OBJECTS)
        elif name == "times":  # nbf after exp, iat in the future
            body["nbf"], body["iat"] = int(now) + 3600, int(now) + 7200
        elif name == "huge":
            body["pad"] = "x" * draw(_PADS)
        else:
            body[draw(_TEXT_8)] = draw(json_values)
    if draw(_ONE_IN_10):
        body = draw(_NOT_OBJECTS)
        labels.append("not-an-object")
    return body, "claims:" + (",".join(labels) or "valid")


@cache
def _headers(kid: str) -> st.SearchStrategy[Any]:
    return st.sampled_from([
        {"alg": "none", "kid": kid}, {"alg": "HS256", "kid": kid}, {"alg": "RS256", "kid": kid},
        {"alg": "ES256", "kid": "other"}, {"alg": "ES256"}, {"alg": "ES256", "kid": kid, "crit": ["exp"]},
        {"alg": "ES256", "kid": kid, "jwk": {"kty": "EC"}}, {}]) | json_values


@st.composite
def tokens(draw: st.DrawFn, signer: TokenSigner) -> tuple[str, str | None, str]:
    """(the token text, the identity its claims name if it is sent as signed, a label)."""
    body, label = draw(claims())
    header = None
    if draw(_ONE_IN_8):
        header = draw(_headers(signer.kid))
        label += "/header"
    if isinstance(body, dict):
        token = signer.sign(body, header if isinstance(header, dict) or header is None else {"x": header})
    else:
        token = signer.sign({"v": body}, header if isinstance(header, dict) else None)
    identity = _claims_identity(body) if isinstance(body, dict) else None
    how = draw(_TOKEN_HOW)
    if how == "as-is":
        return token, identity, label
    head, payload, signature = token.split(".")
    changed = {
        "pad": f"{head}==.{payload}=.{signature}",
        "std": token.replace("-", "+").replace("_", "/"),
        "space": token[:10] + " " + token[10:],
        "cut": token[:draw(_FRACTION) * len(token) // 2**16],
        "extra": token + ".e30",
        "nosig": f"{head}.{payload}.",
        "garbage": draw(_PRINTABLE_100),
    }.get(how)
    if changed is None:  # flip one character of the signature
        at = draw(_FRACTION) * len(signature) // 2**16
        flipped = "A" if signature[at] != "A" else "B"
        changed = f"{head}.{payload}.{signature[:at]}{flipped}{signature[at + 1:]}"
    return changed, identity, f"{label}/token-{how}"


_NOT_PRINTABLE = re.compile(r"[^ -~]")


def _header_value(text: str) -> str:
    """gRPC refuses, on the client side, a non-printable ASCII value: keep the call sendable."""
    return _NOT_PRINTABLE.sub("?", text)


@st.composite
def metadata_lists(draw: st.DrawFn, token: str) -> tuple[tuple[tuple[str, str], ...], str]:
    token = _header_value(token)
    how = draw(_AUTH_HOW)
    auth = {
        "bearer": [("authorization", f"Bearer {token}")],
        "lower": [("authorization", f"bearer {token}")],
        "two-spaces": [("authorization", f"Bearer  {token}")],
        "no-scheme": [("authorization", token)],
        "basic": [("authorization", "Basic " + base64.b64encode(b"a:b").decode())],
        "none": [],
        "twice": [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")],
        "other-first": [("authorization", "Bearer x.y.z"), ("authorization", f"Bearer {token}")],
        "empty": [("authorization", "")],
    }[how]
    extra = draw(_EXTRA)
    if draw(_ONE_IN_20):
        extra.append(("x-pad", "p" * draw(_BIG_HEADER)))
    return tuple(auth + [(k, _header_value(v).strip()) for k, v in extra]), f"auth-{how}"


_struct_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=30)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8)


_IMPERSONATED = st.sampled_from([identity_of("kube-system", "admin"), identity_of("default", "web"), "",
                                 "x"]) | _struct_values
_STRUCT_DICTS = st.dictionaries(st.text(max_size=16), _struct_values, max_size=6)


@st.composite
def structs(draw: st.DrawFn) -> dict[str, Any] | None:
    kind = draw(_STRUCT_KIND)
    if kind == "none":
        return None
    if kind == "impersonate":
        return {"ImpersonatedIdentity": draw(_IMPERSONATED)}
    if kind == "deep":
        nested: dict[str, Any] = {"leaf": 1.0}
        for _ in range(draw(_DEPTH)):
            nested = {"n": nested}
        return nested
    return draw(_STRUCT_DICTS)


validities = st.one_of(st.just(0), st.just(0), st.integers(-100, 100_000),
                       st.sampled_from([-(2**63), 2**63 - 1, 86_400 * 365 * 100, 28 * 3600, 28 * 3600 + 1]))


@st.composite
def ca_inputs(draw: st.DrawFn, signer: TokenSigner) -> CaInput:
    """Everything mutated at once: most inputs are refused, a few succeed."""
    token, identity, token_label = draw(tokens(signer))
    csr, key_der, csr_label = draw(csrs(identity or identity_of("default", "web")))
    metadata, auth_label = draw(metadata_lists(token))
    return CaInput(csr=csr, metadata=metadata, validity=draw(validities), struct=draw(structs()),
                   identity=identity, public_key_der=key_der,
                   what=f"{csr_label} {token_label} {auth_label}")


_GOOD_NAMES = st.sampled_from(["default", "web", "shop", "kube-system", "istio-system", "a", "ns-1",
                               "x" * 63])
_GOOD_ACCOUNTS = st.sampled_from(["web", "default", "admin", "cart", "istiod", "sa.with.dots", "a" * 253])
_GOOD_VALIDITY = st.sampled_from([0, 0, 60, 3600, 28 * 3600])


@st.composite
def identity_inputs(draw: st.DrawFn, signer: TokenSigner) -> CaInput:
    """A valid token for a drawn identity and a CSR whose structure varies (it may ask for other
    identities, DNS names, IPs, CA powers): most succeed, so that the identity property (the
    certificate names the token's identity and nothing else) is checked on every one."""
    namespace, account = draw(_GOOD_NAMES), draw(_GOOD_ACCOUNTS)
    claims = projected_claims(namespace, account, now=time.time())
    token = signer.sign(claims, None)
    identity = identity_of(namespace, account)
    csr, key_der, csr_label = draw(csrs(identity, bytes_too=False))
    return CaInput(csr=csr, metadata=(("authorization", f"Bearer {token}"),),
                   validity=draw(_GOOD_VALIDITY), struct=None, identity=identity,
                   public_key_der=key_der, what=f"{csr_label} identity-focus")
