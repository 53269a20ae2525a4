"""Where the agent's trust bundle comes from: the `BundleSource`s other than the server's
GetBundles (meshca/agent/server_bundles.py, the default), and the SPIFFE bundle parser they
share.

- `HttpBundleSource`: the server's public `/v1/bundle` over HTTPS, in the SPIFFE bundle form
  (a JWK set; each X.509 root is a key with `use: "x509-svid"` and one base64 DER `x5c`),
  which also says how soon to ask again (`spiffe_refresh_hint`).
- `FileBundleSource`: a PEM file, re-read on every fetch. In Kubernetes that is the root
  ConfigMap the server publishes, mounted into the agent; the kubelet rewrites it on rotation.

Both answer `Unavailable` for anything that is not a usable bundle now, so the cache keeps the
roots it has and asks again later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import http.client
import json
import socket
import ssl
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from meshca.agent.ports import TrustBundle
from meshca.core.jwt_svid import JwtPublicKey, public_key_of
from meshca.errors import ConfigurationError, Unavailable

# A bundle holds a few roots (and JWT keys); a megabyte is far more than any real one.
MAX_BUNDLE_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
_DAY = 86400.0  # a longer refresh hint is cut to this (the cache clamps it further)


class HttpBundleSource:
    """GET `url` (https://HOST:PORT/v1/bundle), verified under the PEM roots in `ca_file`
    (re-read on every fetch) for the name `server_name` (default: the URL's host)."""

    def __init__(self, url: str, ca_file: str | Path, timeout: timedelta = timedelta(seconds=10),
                 *, trust_domain: str, server_name: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigurationError(f"--bundle-url must be an https:// URL, not {url!r}")
        if timeout <= timedelta(0):
            raise ConfigurationError("the bundle timeout must be positive")
        self._url = url
        self._host, self._port = parts.hostname, parts.port or 443
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ca_file = Path(ca_file)
        self._timeout = timeout.total_seconds()
        self._trust_domain = trust_domain
        self._server_name = server_name or parts.hostname

    async def fetch(self) -> TrustBundle:
        body = await asyncio.to_thread(self._get)
        return parse_spiffe_bundle(body, self._trust_domain, source=self._url)

    def _get(self) -> bytes:
        deadline = time.monotonic() + self._timeout
        try:
            context = ssl.create_default_context(cafile=str(self._ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise Unavailable(f"cannot load the CA file {self._ca_file} for {self._url}: "
                              f"{exc}") from None
        conn = http.client.HTTPSConnection(self._host, self._port, context=context,
                                           timeout=self._timeout)
        try:
            # Connect to the URL's host, verify the certificate for `server_name`.
            raw = socket.create_connection((self._host, self._port), timeout=self._timeout)
            try:
                conn.sock = context.wrap_socket(raw, server_hostname=self._server_name)
            except BaseException:
                raw.close()
                raise
            conn.request("GET", self._path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise Unavailable(f"{self._url} answered HTTP {response.status}")
            return _read_bounded(response, deadline)
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"cannot fetch the trust bundle from {self._url}: "
                              f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()


def _read_bounded(response: http.client.HTTPResponse, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(_CHUNK):
        size += len(chunk)
        if size > MAX_BUNDLE_BYTES:
            raise http.client.HTTPException(f"bundle over {MAX_BUNDLE_BYTES} bytes")
        if time.monotonic() > deadline:
            raise TimeoutError("the bundle took longer than the timeout")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_spiffe_bundle(body: bytes, trust_domain: str, *, source: str = "bundle",
                        require_roots: bool = True) -> TrustBundle:
    """The X.509 roots, JWT-SVID keys, sequence and refresh hint of a SPIFFE bundle document.
    A bundle without roots is refused unless `require_roots` is False (a federated trust
    domain may publish only JWT keys). JWT keys this agent cannot use (no kid, an unknown key
    type) are skipped: tokens they signed fail validation, nothing else does."""
    try:
        doc: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise Unavailable(f"{source} is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise Unavailable(f"{source} is not a SPIFFE bundle (no 'keys' list)")
    roots: list[x509.Certificate] = []
    jwt_keys: dict[str, JwtPublicKey] = {}
    for key in doc["keys"]:
        if not isinstance(key, dict):
            continue
        if key.get("use") == "jwt-svid":
            kid = key.get("kid")
            try:
                if isinstance(kid, str) and kid:
                    jwt_keys[kid] = public_key_of(key)
            except ValueError:
                pass
            continue
        if key.get("use") != "x509-svid":
            continue  # keys of a use this agent does not serve
        x5c = key.get("x5c")
        if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
            raise Unavailable(f"{source} has an x509-svid key without exactly one x5c")
        try:
            roots.append(x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True)))
        except (ValueError, binascii.Error):
            raise Unavailable(f"{source} has an x5c that is not a DER certificate") from None
    if not roots and require_roots:
        raise Unavailable(f"{source} holds no X.509 roots")
    hint = _number(doc.get("spiffe_refresh_hint"))
    sequence = doc.get("spiffe_sequence")
    return TrustBundle(
        trust_domain=trust_domain, roots=tuple(roots),
        refresh_hint=timedelta(seconds=min(hint, _DAY)) if hint is not None and hint > 0 else None,
        sequence=sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None,
        jwt_keys=jwt_keys)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class FileBundleSource:
    """The PEM roots in `path`, re-read on every fetch; no refresh hint (the cache polls)."""

    def __init__(self, path: str | Path, trust_domain: str) -> None:
        self._path = Path(path)
        self._trust_domain = trust_domain

    async def fetch(self) -> TrustBundle:
        return await asyncio.to_thread(self._read)

    def _read(self) -> TrustBundle:
        try:
            data = self._path.read_bytes()
        except OSError as exc:
            raise Unavailable(f"cannot read the trust bundle {self._path}: {exc.strerror}") from None
        if len(data) > MAX_BUNDLE_BYTES:
            raise Unavailable(f"the trust bundle {self._path} is over {MAX_BUNDLE_BYTES} bytes")
        try:
            roots = x509.load_pem_x509_certificates(data)
        except ValueError:
            # Mid-rewrite, or not PEM at all: keep the roots already held and look again.
            raise Unavailable(f"the trust bundle {self._path} holds no PEM certificate") from None
        return TrustBundle(trust_domain=self._trust_domain, roots=tuple(roots))
