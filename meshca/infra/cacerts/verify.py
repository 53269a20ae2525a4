"""Whether the certificates of a cacerts directory form a usable CA.

`cryptography.x509.verification` decides the path as a relying party would: from ca-cert.pem
through the intermediates of cert-chain.pem to a root of root-cert.pem, it checks names and
signatures, that every issuer is a CA within its path length, that every certificate, the
root included, is valid at `now`, and its own rules on key sizes, signature algorithms and
extension encodings (so a v1 root without basicConstraints cannot anchor the chain).

It verifies ca-cert.pem as an end entity, so meshca adds what it cannot express:

- the key matches ca-cert.pem, and ca-cert.pem is itself a CA with keyCertSign;
- cert-chain.pem starts with ca-cert.pem and lists each certificate's issuer next, up to the
  root or a certificate a root issued (Istio hands it to workloads as it is);
- an issuer that states a key usage has keyCertSign, and path lengths count ca-cert.pem as a
  CA below its issuers (the library counts only the certificates between).

When the library refuses, `_explain` says which certificate breaks which rule, in one sentence
(which root is missing, what expired when); the library's own words are the fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from meshca.core.keys import SigningKey, describe_public_key
from meshca.infra.cacerts.layout import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, PluggedCaError

Certs = tuple[x509.Certificate, ...]
_E = TypeVar("_E", bound=x509.ExtensionType)

# The library insists that a CA policy require basicConstraints; everything else about the
# issuers is meshca's rule set below, and ca-cert.pem is judged by check_signing_certificate.
_CA_POLICY = ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, Criticality.AGNOSTIC, None
)
_EE_POLICY = ExtensionPolicy.permit_all()


def name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "<empty subject>"


def _spki(public_key: object) -> bytes:
    assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    """The extension's value, None if absent; ValueError if the extensions are malformed."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


# ---- meshca's own rules -----------------------------------------------------------------------

def check_key_matches(key: SigningKey, certificate: x509.Certificate) -> None:
    cert_key = certificate.public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise PluggedCaError(
            f"{CA_CERT} has a {describe_public_key(cert_key)} key; meshca signs with EC or RSA only"
        )
    if _spki(cert_key) != _spki(key.public_key()):
        raise PluggedCaError(
            f"{CA_KEY} does not match {CA_CERT}: the key is {describe_public_key(key.public_key())}, "
            f"the certificate's is a different {describe_public_key(cert_key)} key"
        )


def check_signing_certificate(cert: x509.Certificate) -> None:
    try:
        constraints = _extension(cert, x509.BasicConstraints)
        usage = _extension(cert, x509.KeyUsage)
    except ValueError:
        raise PluggedCaError(f"{CA_CERT} has malformed extensions") from None
    if constraints is None or not constraints.ca:
        raise PluggedCaError(f"{CA_CERT} ({name(cert)}) is not a CA certificate (basicConstraints CA:true)")
    if usage is None or not usage.key_cert_sign:
        raise PluggedCaError(f"{CA_CERT} ({name(cert)}) lacks keyUsage keyCertSign")


def dedupe_roots(roots: Sequence[x509.Certificate], warnings: list[str]) -> Certs:
    unique: list[x509.Certificate] = []
    for root in roots:
        if root in unique:
            warnings.append(f"{ROOT_CERT} lists {name(root)} more than once; duplicates ignored")
        else:
            unique.append(root)
    return tuple(unique)


def _listed_path(certificate: x509.Certificate, listed: Certs, roots: Certs,
                 warnings: list[str]) -> Certs:
    """cert-chain.pem up to the first root it lists, each certificate issued by the next."""
    if listed[0] != certificate:
        raise PluggedCaError(
            f"{CERT_CHAIN} must start with the certificate in {CA_CERT} ({name(certificate)}); "
            f"it starts with {name(listed[0])}"
        )
    end = next((i for i, cert in enumerate(listed) if cert in roots), None)
    path = listed if end is None else listed[: end + 1]
    for i, (child, parent) in enumerate(pairwise(path), start=1):
        if not _issued_by(child, parent):
            raise PluggedCaError(
                f"{CERT_CHAIN} is out of order or broken: certificate #{i} ({name(child)}) "
                f"is not issued by certificate #{i + 1} ({name(parent)}); "
                f"list {CA_CERT} first, then each certificate's issuer, up to the root"
            )
    if end is not None and end + 1 < len(listed):
        warnings.append(
            f"{CERT_CHAIN} continues past the root {name(listed[end])}; "
            f"{len(listed) - end - 1} certificate(s) after it are ignored"
        )
    return path


def _constraint_problem(path: Certs) -> str | None:
    """Every issuer on the path is a CA, with keyCertSign if it states a key usage, whose
    pathLenConstraint allows the CA certificates below it, ca-cert.pem included."""
    for j in range(1, len(path)):
        issuer = path[j]
        where = f"root {ROOT_CERT}" if j == len(path) - 1 else f"{CERT_CHAIN} certificate #{j + 1}"
        try:
            constraints = _extension(issuer, x509.BasicConstraints)
            usage = _extension(issuer, x509.KeyUsage)
        except ValueError:
            return f"{where} has malformed extensions"
        if constraints is None or not constraints.ca:
            return f"{where} ({name(issuer)}) issues certificates but is not a CA"
        if usage is not None and not usage.key_cert_sign:
            return f"{where} ({name(issuer)}) issues certificates but lacks keyCertSign"
        limit = constraints.path_length
        below = sum(1 for c in path[:j] if c.issuer != c.subject)
        if limit is not None and below > limit:
            return (f"{where} ({name(issuer)}) allows {limit} CA certificate(s) "
                    f"below it, the chain has {below}")
    return None


# ---- the library's path validation, and its refusals explained -------------------------------

def verify_chain(certificate: x509.Certificate, listed: Certs, roots: Certs, now: datetime,
                 warnings: list[str]) -> tuple[Certs, Certs]:
    """(path, intermediates): ca-cert.pem up to its anchoring root as verified, and the
    certificates strictly between them that cert-chain.pem lists; raise if not a usable CA."""
    path = _listed_path(certificate, listed, roots, warnings)
    intermediates = path[1:-1] if path[-1] in roots else path[1:]
    verifier = (
        PolicyBuilder().store(Store(list(roots))).time(now)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verified = tuple(verifier.verify(certificate, list(intermediates)).chain)
    except VerificationError as exc:
        message = _explain(path, roots, now) or f"{CERT_CHAIN} does not verify against {ROOT_CERT}: {exc}"
        raise PluggedCaError(message) from None
    if verified[: len(intermediates) + 1] != (certificate, *intermediates):
        raise PluggedCaError(
            f"{CERT_CHAIN} verifies only along another path than the one it lists: "
            + " -> ".join(name(cert) for cert in verified)
        )
    problem = _constraint_problem(verified)
    if problem is not None:
        raise PluggedCaError(problem)
    return verified, intermediates


def _explain(path: Certs, roots: Certs, now: datetime) -> str | None:
    """meshca's sentence for a path the library refused, or None if none of them applies."""
    last = path[-1]
    anchor = last if last in roots else next((r for r in roots if _issued_by(last, r)), None)
    if anchor is None:
        self_signed = last.issuer == last.subject and _issued_by(last, last)
        what = (
            "a self-signed root that is not in" if self_signed
            else "a certificate not issued by any root in"
        )
        return (
            f"{CERT_CHAIN} does not reach a root of {ROOT_CERT}: it ends at {what} {ROOT_CERT} "
            f"({name(last)}, issued by {last.issuer.rfc4514_string()}; {len(roots)} root(s) listed)"
        )
    full = path if anchor is last else (*path, anchor)
    return _constraint_problem(full) or _validity_problem(full, now)


def describe(cert: x509.Certificate, path: Certs) -> str:
    """How a certificate on the path is named in messages."""
    if cert is path[0]:
        return f"{CA_CERT} ({name(cert)})"
    if cert is path[-1]:
        return f"the root ({name(cert)})"
    return f"intermediate {name(cert)}"


def _validity_problem(path: Certs, now: datetime) -> str | None:
    for cert in path:
        if now < cert.not_valid_before_utc:
            return f"{describe(cert, path)} is not valid until {cert.not_valid_before_utc.isoformat()}"
        if now > cert.not_valid_after_utc:
            return f"{describe(cert, path)} expired at {cert.not_valid_after_utc.isoformat()}"
    return None
