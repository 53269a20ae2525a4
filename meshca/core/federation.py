"""SPIFFE federation, the pure part: what a relationship with another trust domain is, how a
`--federate-with` value reads, what a foreign bundle must look like, when to fetch it again.

Facts from the SPIFFE Federation spec this relies on:
- a bundle names no trust domain; the relying party associates it with the trust domain it
  configured for the endpoint (so the configuration is the authority, never the document);
- `https_web` authenticates the endpoint with Web PKI (the URL's host); `https_spiffe` with an
  X509-SVID for a configured endpoint SPIFFE ID, verified first against an operator-supplied
  bundle and afterwards against the latest fetched bundle of that ID's trust domain;
- endpoint URLs are `https` without userinfo; clients poll at `spiffe_refresh_hint` (five
  minutes when absent); `spiffe_sequence` orders two bundles; bundles of different trust domains
  are never merged.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.core.spiffe import SpiffeId

HTTPS_WEB = "https_web"
HTTPS_SPIFFE = "https_spiffe"
PROFILES = (HTTPS_WEB, HTTPS_SPIFFE)
ENDPOINT_PATH = "/meshca/federation"  # the SPIFFE ID path of meshca's own bundle endpoint
DEFAULT_REFRESH_SECONDS = 300.0  # the spec's recommendation when a bundle gives no hint
MAX_BUNDLE_BYTES = 1024 * 1024
# In one `--federate-with` value options follow the URL after commas; the environment variable
# holding several values separates them with this instead (a comma would split one value).
ENTRY_SEPARATOR = ";"


@dataclass(frozen=True, slots=True)
class Relationship:
    """Trust `trust_domain`'s SVIDs, with its bundle fetched from `url`."""

    trust_domain: str
    url: str
    profile: str = HTTPS_WEB
    endpoint_spiffe_id: str | None = None  # https_spiffe: the endpoint's SVID must name this
    # https_spiffe: PEM roots of the endpoint ID's trust domain, for the first fetch.
    bootstrap_pem: str | None = None
    # https_web: PEM CAs to verify the endpoint with instead of the system's (private PKI, tests).
    web_ca_pem: str | None = None
    from_flags: bool = False  # written from --federate-with at start-up; not changed by the API


@dataclass(frozen=True, slots=True)
class FlagEntry:
    """One `--federate-with` value as written: files not read yet."""

    trust_domain: str
    url: str
    profile: str = HTTPS_WEB
    endpoint_spiffe_id: str | None = None
    bundle_file: str | None = None
    ca_file: str | None = None


_OPTIONS = {"profile", "endpoint-spiffe-id", "bundle", "ca"}


def parse_flag_entry(text: str) -> FlagEntry:
    """`TD=URL[,profile=https_web|https_spiffe][,endpoint-spiffe-id=ID][,bundle=FILE][,ca=FILE]`;
    ValueError naming what is wrong. Checked further by `problems` once files are read."""
    head, *options = [part.strip() for part in text.split(",")]
    td, eq, url = head.partition("=")
    if not eq or not td.strip() or not url.strip():
        raise ValueError(f"{text!r} must start with TRUST_DOMAIN=URL")
    values: dict[str, str] = {}
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip()
        if not eq or key not in _OPTIONS:
            raise ValueError(f"{option!r} in {text!r} is not one of "
                             f"{', '.join(sorted(o + '=…' for o in _OPTIONS))}")
        if key in values:
            raise ValueError(f"{key} is given twice in {text!r}")
        values[key] = value.strip()
    profile = values.get("profile", HTTPS_WEB)
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    return FlagEntry(td.strip(), url.strip(), profile, values.get("endpoint-spiffe-id") or None,
                     values.get("bundle") or None, values.get("ca") or None)


def problems(relationship: Relationship, own_trust_domain: str) -> list[tuple[str, str]]:
    """Every reason the relationship cannot be used, as (field, message); empty when it can."""
    found: list[tuple[str, str]] = []
    r = relationship
    try:
        SpiffeId.for_trust_domain(r.trust_domain)
        if r.trust_domain == own_trust_domain:
            found.append(("trust_domain", "is this server's own trust domain"))
    except ValueError as exc:
        found.append(("trust_domain", str(exc)))
    found += [("url", message) for message in _url_problems(r.url)]
    if r.profile not in PROFILES:
        found.append(("profile", f"must be one of {', '.join(PROFILES)}"))
    if r.profile == HTTPS_SPIFFE:
        if not r.endpoint_spiffe_id:
            found.append(("endpoint_spiffe_id", "is required for https_spiffe"))
        else:
            try:
                SpiffeId.parse(r.endpoint_spiffe_id)
            except ValueError as exc:
                found.append(("endpoint_spiffe_id", str(exc)))
        if not r.bootstrap_pem:
            found.append(("bootstrap_bundle", "is required for https_spiffe: the roots that "
                          "verify the endpoint's SVID on the first fetch"))
    elif r.endpoint_spiffe_id or r.bootstrap_pem:
        found.append(("profile", "endpoint_spiffe_id and bootstrap_bundle need https_spiffe"))
    if r.web_ca_pem and r.profile != HTTPS_WEB:
        found.append(("web_ca", "only https_web uses a CA file"))
    for name, pem in (("bootstrap_bundle", r.bootstrap_pem), ("web_ca", r.web_ca_pem)):
        if pem:
            try:
                x509.load_pem_x509_certificates(pem.encode())
            except ValueError:
                found.append((name, "holds no PEM certificate"))
    return found


def _url_problems(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a ValueError names a bad port
    except ValueError as exc:
        return [f"is not a URL: {exc}"]
    if parts.scheme != "https":
        return ["must be an https:// URL"]
    if not parts.hostname:
        return ["has no host"]
    if "@" in parts.netloc:
        return ["must not carry user info"]
    if parts.fragment:
        return ["must not carry a fragment"]
    return []


def endpoint_trust_domain(relationship: Relationship) -> str:
    """The trust domain whose roots verify an https_spiffe endpoint (its SVID's)."""
    assert relationship.endpoint_spiffe_id is not None
    return SpiffeId.parse(relationship.endpoint_spiffe_id).trust_domain


def roots_from_text(text: str) -> str:
    """A bootstrap bundle given as PEM certificates or as a SPIFFE bundle (JSON): its roots as
    PEM. ValueError when it holds neither."""
    stripped = text.strip()
    if stripped.startswith("{"):
        parsed = parse_bundle(stripped.encode(), trust_domain=None)
        if not parsed.x509_roots:
            raise ValueError("the SPIFFE bundle holds no x509-svid root")
        return "".join(_pem(c) for c in parsed.x509_roots)
    try:
        certs = x509.load_pem_x509_certificates(stripped.encode())
    except ValueError:
        raise ValueError("is neither PEM certificates nor a SPIFFE bundle") from None
    return "".join(_pem(c) for c in certs)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode("ascii")


# ---- foreign bundles -------------------------------------------------------------------------

class BundleRejected(ValueError):
    """A fetched document is not a usable bundle of the expected trust domain. `outcome` is a
    short code for metrics: `invalid` or `wrong_trust_domain`."""

    def __init__(self, message: str, outcome: str = "invalid") -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    x509_roots: tuple[x509.Certificate, ...]
    jwt_keys: dict[str, dict[str, Any]]  # by kid, each as the document gave it
    sequence: int | None
    refresh_hint: float | None  # seconds


def parse_bundle(body: bytes, trust_domain: str | None) -> ParsedBundle:
    """A SPIFFE bundle (JWK Set): `x509-svid` keys with exactly one CA certificate in `x5c`,
    `jwt-svid` keys with a distinct `kid`; keys of other uses are ignored. With `trust_domain`,
    a root whose SPIFFE ID SAN names another trust domain refuses the whole bundle: the one
    place a bundle can give away whose it is."""
    if len(body) > MAX_BUNDLE_BYTES:
        raise BundleRejected(f"the bundle is over {MAX_BUNDLE_BYTES} bytes")
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BundleRejected("the bundle is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise BundleRejected("the bundle is not a JWK Set (no 'keys' list)")
    roots: list[x509.Certificate] = []
    jwt_keys: dict[str, dict[str, Any]] = {}
    for index, key in enumerate(doc["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("use"), str):
            raise BundleRejected(f"keys[{index}] has no 'use'")
        if key["use"] == "x509-svid":
            roots.append(_root(key, index, trust_domain))
        elif key["use"] == "jwt-svid":
            kid = key.get("kid")
            if not isinstance(kid, str) or not kid:
                raise BundleRejected(f"keys[{index}] (jwt-svid) has no 'kid'")
            if not isinstance(key.get("kty"), str):
                raise BundleRejected(f"keys[{index}] (jwt-svid) has no 'kty'")
            if kid in jwt_keys:
                raise BundleRejected(f"keys[{index}]: kid {kid!r} appears twice")
            jwt_keys[kid] = dict(key)
    if not roots and not jwt_keys:
        raise BundleRejected("the bundle holds no x509-svid or jwt-svid key")
    sequence, hint = doc.get("spiffe_sequence"), doc.get("spiffe_refresh_hint")
    return ParsedBundle(
        tuple(roots), jwt_keys,
        sequence if isinstance(sequence, int) and not isinstance(sequence, bool)
        and sequence >= 0 else None,
        float(hint) if isinstance(hint, int | float) and not isinstance(hint, bool)
        and hint > 0 else None)


def _root(key: dict[str, Any], index: int, trust_domain: str | None) -> x509.Certificate:
    x5c = key.get("x5c")
    if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
        raise BundleRejected(f"keys[{index}] (x509-svid) needs exactly one certificate in x5c")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except (ValueError, binascii.Error):
        raise BundleRejected(f"keys[{index}]: x5c is not a DER certificate") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise BundleRejected(f"keys[{index}]: the certificate is not a CA certificate")
    if trust_domain is not None:
        for named in _spiffe_trust_domains(cert):
            if named != trust_domain:
                raise BundleRejected(
                    f"keys[{index}]: the root names trust domain {named!r}, not {trust_domain!r}",
                    "wrong_trust_domain")
    return cert


def _spiffe_trust_domains(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    found = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.lower().startswith("spiffe://"):
            found.append(uri[len("spiffe://"):].partition("/")[0].lower())
    return found


@dataclass(frozen=True, slots=True)
class RefreshBounds:
    """How often a foreign bundle is fetched, whatever its `spiffe_refresh_hint` asks."""

    shortest: float = 30.0
    longest: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.shortest <= self.longest:
            raise ValueError("federation refresh bounds need 0 < shortest <= longest")

    def delay(self, refresh_hint: float | None) -> float:
        wanted = refresh_hint if refresh_hint is not None else DEFAULT_REFRESH_SECONDS
        return min(self.longest, max(self.shortest, wanted))
