"""A plugged-in CA: Istio's `cacerts` directory, verified at load and reloaded on change.

The layout (docs/contracts.md §4) is four PEM files in one directory:

- `ca-cert.pem`    the signing certificate (CA:true, keyCertSign);
- `ca-key.pem`     its private key (PKCS#8 or traditional PEM, EC or RSA, unencrypted);
- `root-cert.pem`  the trust bundle: one or more roots, all of them published to peers;
- `cert-chain.pem` the signing certificate up to the root: ca-cert, intermediates, root.

All four or none. Everything a relying party would check is checked here, once, so that a
broken set is refused with one clear sentence instead of failing handshakes later:

- every file parses, holds only what it should, and no PEM block is cut short (a half-written
  file is refused, never silently shortened);
- the key matches ca-cert.pem and is EC or RSA; ca-cert.pem is a CA with keyCertSign;
- cert-chain.pem starts with ca-cert.pem, each certificate is issued (name and signature) by
  the next, every issuer is a CA whose path length allows what is below it, and the chain
  reaches a root of root-cert.pem: either it contains that root or its last certificate is
  issued by one;
- every certificate on the path from ca-cert.pem to that root is valid at `now`.

Decisions:

- **Several roots** in root-cert.pem are normal (rotation, multi-cluster): all are kept in the
  bundle; only one of them has to anchor the chain. Duplicates are dropped with a warning,
  roots that have expired stay but are warned about (the operator may still be rotating).
- **Key file permissions** looser than 0600 are a *warning*, not a refusal: Kubernetes mounts
  secret volumes 0644 unless `defaultMode` says otherwise, inside a container and a pod that
  only meshca runs in, and refusing would break the most common deployment. The warning says
  how to tighten it. Group- or world-writable files are warned about the same way.
- **Near expiry** (< 30 days by default, for any certificate on the path) is returned in
  `expires_soon` and `warnings`; this module logs nothing.
- Messages name files, certificate subjects and dates, never key material, and carry no
  exception chain from the parsers (`from None`).

`PluggedCaWatcher` polls `directory_fingerprint` and reloads when it changes. Kubernetes
updates a secret volume by swapping a symlink, so a poll can observe a half-updated set: a
new set replaces the current CA only if it loads and verifies completely; otherwise the old
CA is kept and the error is recorded for status and metrics.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshca.core.authority import SigningAuthority
from meshca.core.bundle import TrustBundle
from meshca.core.keys import SigningKey, describe_public_key
from meshca.errors import ConfigurationError

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
CA_FILES: tuple[str, ...] = (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN)

EXPIRY_WARNING = timedelta(days=30)
MAX_FILE_BYTES = 1 << 20  # a bundle of hundreds of roots is well under this
_READ_ATTEMPTS = 3

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL
)
_PEM_BEGIN = re.compile(rb"-----BEGIN ")
_PRIVATE_KEY_LABELS = {b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"}


class PluggedCaError(ConfigurationError):
    """The plugged-in CA files are incomplete, unreadable or do not form a usable CA."""


class PluggedCaMissing(PluggedCaError):
    """None of the four files exist: there is no plugged-in CA (not the same as a broken one)."""


@dataclass(frozen=True, slots=True)
class PluggedCa:
    """A verified plugged-in CA.

    `chain` holds the certificates strictly between the signing certificate and the root that
    anchors it (roots excluded, as `SigningAuthority.chain` wants); `anchor` is that root;
    `roots` is the whole trust bundle. `not_after` is the earliest expiry on the path
    signing cert → anchor. `fingerprint` is a SHA-256 over the four files' bytes.
    """

    directory: Path
    certificate: x509.Certificate
    private_key: SigningKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    anchor: x509.Certificate
    fingerprint: str
    not_after: datetime
    expires_soon: bool
    warnings: tuple[str, ...]

    def authority(self, generation_id: int) -> SigningAuthority:
        return SigningAuthority(
            generation_id=generation_id,
            certificate=self.certificate,
            private_key=self.private_key,
            chain=self.chain,
            bundle=TrustBundle(self.roots),
        )


# ---- loading ---------------------------------------------------------------------------------

def load_plugged_ca(
    directory: Path, now: datetime, *, expiry_warning: timedelta = EXPIRY_WARNING
) -> PluggedCa:
    """Read and verify Istio's cacerts layout in `directory`; raise PluggedCaError if unusable.

    Raises PluggedCaMissing (a PluggedCaError) when none of the four files exist.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    contents = _read_stable(directory)
    warnings = _permission_warnings(directory)

    signing = _certificates(contents[CA_CERT], CA_CERT)
    certificate = signing[0]
    if len(signing) > 1:
        warnings.append(
            f"{CA_CERT} holds {len(signing)} certificates; only the first is the signing "
            f"certificate, the rest are ignored (the chain belongs in {CERT_CHAIN})"
        )
    key = _private_key(contents[CA_KEY])
    listed_roots = _certificates(contents[ROOT_CERT], ROOT_CERT)
    listed = _certificates(contents[CERT_CHAIN], CERT_CHAIN)

    _check_key_matches(key, certificate)
    _check_signing_certificate(certificate)
    roots = _dedupe_roots(listed_roots, warnings)
    intermediates, anchor = _verify_chain(certificate, listed, roots, warnings)

    path = (certificate, *intermediates) + (() if anchor == certificate else (anchor,))
    _check_path_constraints(path)
    not_after = _check_validity(path, now)
    expires_soon = _expiry_warnings(path, now, expiry_warning, warnings)
    _expired_root_warnings(roots, anchor, now, warnings)

    return PluggedCa(
        directory=directory,
        certificate=certificate,
        private_key=key,
        chain=intermediates,
        roots=roots,
        anchor=anchor,
        fingerprint=_content_fingerprint(contents),
        not_after=not_after,
        expires_soon=expires_soon,
        warnings=tuple(warnings),
    )


def _read_stable(directory: Path) -> dict[str, bytes]:
    """The four files' bytes, read between two identical stat snapshots (no torn read)."""
    for _ in range(_READ_ATTEMPTS):
        present = [name for name in CA_FILES if (directory / name).is_file()]
        if not present:
            raise PluggedCaMissing(
                f"no plugged-in CA files in {directory} (expected {', '.join(CA_FILES)})"
            )
        if len(present) < len(CA_FILES):
            missing = [name for name in CA_FILES if name not in present]
            raise PluggedCaError(
                f"incomplete plugged-in CA in {directory}: missing {', '.join(missing)} "
                f"(all four of {', '.join(CA_FILES)} are required, or none)"
            )
        before = _stat_signature(directory)
        if before is None:
            continue
        contents = {name: _read_file(directory / name) for name in CA_FILES}
        if _stat_signature(directory) == before:
            return contents
    raise PluggedCaError(f"the plugged-in CA files in {directory} kept changing while being read")


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise PluggedCaError(f"{path.name} disappeared while being read") from None
    except OSError as exc:
        raise PluggedCaError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_FILE_BYTES:
        raise PluggedCaError(f"{path.name} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _stat_signature(directory: Path) -> tuple[tuple[int, int, int, int], ...] | None:
    try:
        stats = [os.stat(directory / name) for name in CA_FILES]
    except OSError:
        return None
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def _permission_warnings(directory: Path) -> list[str]:
    warnings: list[str] = []
    for name in CA_FILES:
        try:
            mode = stat.S_IMODE(os.stat(directory / name).st_mode)
        except OSError:
            continue
        if name == CA_KEY and mode & 0o077:
            warnings.append(
                f"{CA_KEY} is accessible to group or others (mode {mode:04o}); loaded anyway, "
                "as Kubernetes mounts secrets 0644 by default: set defaultMode 0400 on the volume"
            )
        elif name != CA_KEY and mode & 0o022:
            warnings.append(f"{name} is writable by group or others (mode {mode:04o})")
    return warnings


def _content_fingerprint(contents: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in CA_FILES:
        data = contents[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


# ---- parsing ---------------------------------------------------------------------------------

def _pem_blocks(data: bytes, name: str) -> list[tuple[bytes, bytes]]:
    """(label, whole block) pairs; refuse blocks cut short, such as a half-written file's."""
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if len(_PEM_BEGIN.findall(data)) != len(blocks):
        raise PluggedCaError(f"{name} has an unterminated or malformed PEM block (truncated file?)")
    return blocks


def _certificates(data: bytes, name: str) -> tuple[x509.Certificate, ...]:
    blocks = _pem_blocks(data, name)
    if not blocks:
        raise PluggedCaError(f"{name} holds no PEM certificate")
    certs: list[x509.Certificate] = []
    for index, (label, block) in enumerate(blocks, start=1):
        if label != b"CERTIFICATE":
            raise PluggedCaError(
                f"{name} block #{index} is a {label.decode()!r}, expected only CERTIFICATE blocks"
            )
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise PluggedCaError(f"{name} certificate #{index} cannot be parsed") from None
    return tuple(certs)


def _private_key(data: bytes) -> SigningKey:
    blocks = _pem_blocks(data, CA_KEY)
    if any(label == b"ENCRYPTED PRIVATE KEY" for label, _ in blocks):
        raise PluggedCaError(f"{CA_KEY} is encrypted; meshca needs an unencrypted key")
    keys = [block for label, block in blocks if label in _PRIVATE_KEY_LABELS]
    if len(keys) != 1:
        raise PluggedCaError(f"{CA_KEY} must hold exactly one PEM private key, found {len(keys)}")
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except TypeError:
        raise PluggedCaError(f"{CA_KEY} is encrypted; meshca needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PluggedCaError(f"{CA_KEY} cannot be parsed as a private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PluggedCaError(
            f"{CA_KEY} holds an unsupported key type ({type(key).__name__}); "
            "meshca signs with EC or RSA keys only"
        )
    return key


# ---- checks ----------------------------------------------------------------------------------

def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "<empty subject>"


def _spki(public_key: object) -> bytes:
    assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_key_matches(key: SigningKey, certificate: x509.Certificate) -> None:
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


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _extensions_readable(cert: x509.Certificate, where: str) -> None:
    try:
        _ = cert.extensions
    except ValueError:
        raise PluggedCaError(f"{where} has malformed extensions") from None


def _check_signing_certificate(cert: x509.Certificate) -> None:
    _extensions_readable(cert, CA_CERT)
    constraints = _basic_constraints(cert)
    if constraints is None or not constraints.ca:
        raise PluggedCaError(f"{CA_CERT} ({_name(cert)}) is not a CA certificate (basicConstraints CA:true)")
    usage = _key_usage(cert)
    if usage is None or not usage.key_cert_sign:
        raise PluggedCaError(f"{CA_CERT} ({_name(cert)}) lacks keyUsage keyCertSign")


def _check_issuer_is_ca(cert: x509.Certificate, where: str) -> None:
    _extensions_readable(cert, where)
    constraints = _basic_constraints(cert)
    if constraints is None or not constraints.ca:
        raise PluggedCaError(f"{where} ({_name(cert)}) issues certificates but is not a CA")
    usage = _key_usage(cert)
    if usage is not None and not usage.key_cert_sign:
        raise PluggedCaError(f"{where} ({_name(cert)}) issues certificates but lacks keyCertSign")


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _dedupe_roots(roots: Sequence[x509.Certificate], warnings: list[str]) -> tuple[x509.Certificate, ...]:
    unique: list[x509.Certificate] = []
    for root in roots:
        if root in unique:
            warnings.append(f"{ROOT_CERT} lists {_name(root)} more than once; duplicates ignored")
        else:
            unique.append(root)
    return tuple(unique)


def _verify_chain(
    certificate: x509.Certificate,
    listed: tuple[x509.Certificate, ...],
    roots: tuple[x509.Certificate, ...],
    warnings: list[str],
) -> tuple[tuple[x509.Certificate, ...], x509.Certificate]:
    """(intermediates, anchoring root) for cert-chain.pem; raise if it is not a valid path."""
    if listed[0] != certificate:
        raise PluggedCaError(
            f"{CERT_CHAIN} must start with the certificate in {CA_CERT} ({_name(certificate)}); "
            f"it starts with {_name(listed[0])}"
        )
    end = next((i for i, cert in enumerate(listed) if cert in roots), None)
    path = listed if end is None else listed[: end + 1]
    for i in range(len(path) - 1):
        child, parent = path[i], path[i + 1]
        if not _issued_by(child, parent):
            raise PluggedCaError(
                f"{CERT_CHAIN} is out of order or broken: certificate #{i + 1} ({_name(child)}) "
                f"is not issued by certificate #{i + 2} ({_name(parent)}); "
                f"list {CA_CERT} first, then each certificate's issuer, up to the root"
            )
    if end is not None:
        if end + 1 < len(listed):
            warnings.append(
                f"{CERT_CHAIN} continues past the root {_name(listed[end])}; "
                f"{len(listed) - end - 1} certificate(s) after it are ignored"
            )
        return tuple(listed[1:end]), listed[end]
    last = listed[-1]
    anchor = next((root for root in roots if _issued_by(last, root)), None)
    if anchor is None:
        self_signed = last.issuer == last.subject and _issued_by(last, last)
        what = (
            "a self-signed root that is not in" if self_signed
            else "a certificate not issued by any root in"
        )
        raise PluggedCaError(
            f"{CERT_CHAIN} does not reach a root of {ROOT_CERT}: it ends at {what} {ROOT_CERT} "
            f"({_name(last)}, issued by {last.issuer.rfc4514_string()}; {len(roots)} root(s) listed)"
        )
    return tuple(listed[1:]), anchor


def _check_path_constraints(path: tuple[x509.Certificate, ...]) -> None:
    """Every issuer on the path is a CA whose pathLenConstraint allows the CAs below it."""
    for j in range(1, len(path)):
        where = f"root {ROOT_CERT}" if j == len(path) - 1 else f"{CERT_CHAIN} certificate #{j + 1}"
        issuer = path[j]
        if j == len(path) - 1 and _basic_constraints(issuer) is None:
            _extensions_readable(issuer, where)
            continue  # a v1 root without extensions is still a trust anchor
        _check_issuer_is_ca(issuer, where)
        limit = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        below = sum(1 for c in path[:j] if c.issuer != c.subject)
        if limit is not None and below > limit:
            raise PluggedCaError(
                f"{where} ({_name(issuer)}) allows {limit} CA certificate(s) "
                f"below it, the chain has {below}"
            )


def _describe(cert: x509.Certificate, path: tuple[x509.Certificate, ...]) -> str:
    if cert is path[0]:
        return f"{CA_CERT} ({_name(cert)})"
    if cert is path[-1]:
        return f"the root ({_name(cert)})"
    return f"intermediate {_name(cert)}"


def _check_validity(path: tuple[x509.Certificate, ...], now: datetime) -> datetime:
    for cert in path:
        if now < cert.not_valid_before_utc:
            raise PluggedCaError(
                f"{_describe(cert, path)} is not valid until {cert.not_valid_before_utc.isoformat()}"
            )
        if now > cert.not_valid_after_utc:
            raise PluggedCaError(
                f"{_describe(cert, path)} expired at {cert.not_valid_after_utc.isoformat()}"
            )
    return min(cert.not_valid_after_utc for cert in path)


def _expiry_warnings(
    path: tuple[x509.Certificate, ...], now: datetime, within: timedelta, warnings: list[str]
) -> bool:
    soon = False
    for cert in path:
        left = cert.not_valid_after_utc - now
        if left < within:
            soon = True
            warnings.append(
                f"{_describe(cert, path)} expires in {left.days} day(s), at "
                f"{cert.not_valid_after_utc.isoformat()}"
            )
    return soon


def _expired_root_warnings(
    roots: tuple[x509.Certificate, ...], anchor: x509.Certificate, now: datetime, warnings: list[str]
) -> None:
    for root in roots:
        if root != anchor and now > root.not_valid_after_utc:
            warnings.append(
                f"{ROOT_CERT} still lists {_name(root)}, which expired at "
                f"{root.not_valid_after_utc.isoformat()}"
            )


# ---- change detection ------------------------------------------------------------------------

def directory_fingerprint(directory: Path) -> str | None:
    """A cheap digest of the four files' mtime, size and content; None if none of them exist.

    A partial set still has a fingerprint (so a watcher notices it, then refuses to load it).
    """
    digest = hashlib.sha256()
    present = False
    for name in CA_FILES:
        path = directory / name
        try:
            info = os.stat(path)
        except OSError:
            digest.update(f"{name}\0absent\0".encode())
            continue
        present = True
        digest.update(f"{name}\0{info.st_mtime_ns}\0{info.st_size}\0".encode())
        try:
            with path.open("rb") as f:
                digest.update(hashlib.sha256(f.read(MAX_FILE_BYTES + 1)).digest())
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest() if present else None


class PluggedCaWatcher:
    """Polls a cacerts directory; swaps in a new CA only when the new files load completely.

    `poll(now)` returns the newly loaded CA when the files changed and verify, else None.
    When they changed and do not verify (half-written, broken, removed), the current CA is
    kept and `last_error` says why, until a good set (or the known one) is back. A set that
    failed is tried again on every poll (it may be mid-update, or not valid yet). Poll from one
    task at a time; the watcher holds no lock.
    """

    def __init__(
        self,
        directory: Path,
        current: PluggedCa | None = None,
        *,
        expiry_warning: timedelta = EXPIRY_WARNING,
    ) -> None:
        self._directory = directory
        self._current = current
        self._expiry_warning = expiry_warning
        self._seen: str | None = None
        self._error: str | None = None
        self._error_at: datetime | None = None

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def current(self) -> PluggedCa | None:
        return self._current

    @property
    def last_error(self) -> str | None:
        return self._error

    @property
    def last_error_at(self) -> datetime | None:
        """When `last_error` was first seen (it is not re-stamped while it stays the same)."""
        return self._error_at

    def poll(self, now: datetime) -> PluggedCa | None:
        fingerprint = directory_fingerprint(self._directory)
        if fingerprint is not None and fingerprint == self._seen:
            self._clear_error()
            return None
        if fingerprint is None:
            keeping = "; keeping the loaded CA" if self._current is not None else ""
            self._record(f"no plugged-in CA files in {self._directory}{keeping}", now)
            return None
        try:
            loaded = load_plugged_ca(self._directory, now, expiry_warning=self._expiry_warning)
        except PluggedCaError as exc:
            keeping = "; keeping the loaded CA" if self._current is not None else ""
            self._record(f"{exc}{keeping}", now)
            return None
        self._seen = fingerprint
        self._clear_error()
        if self._current is not None and loaded.fingerprint == self._current.fingerprint:
            return None  # touched or re-written with the same bytes
        self._current = loaded
        return loaded

    def _record(self, message: str, now: datetime) -> None:
        if message != self._error:
            self._error, self._error_at = message, now

    def _clear_error(self) -> None:
        self._error, self._error_at = None, None
