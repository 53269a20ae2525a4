"""`BundleFetcher` over HTTPS (SPIFFE Federation §5.2): `https_web` verifies the endpoint's
certificate for the URL's host under Web PKI (the system's CAs, or a configured CA file);
`https_spiffe` verifies its chain under the given SPIFFE roots only, ignores the host name,
and requires the certificate's one URI SAN to be the configured endpoint SPIFFE ID.

Redirects are not followed (the spec lets a client follow them; meshca answers the operator
with the status instead, so the configured URL stays the only place trust comes from).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from urllib.parse import urlsplit

from cryptography import x509

from meshca.core.certificates import spiffe_id_of
from meshca.core.federation import HTTPS_SPIFFE
from meshca.service.federation_ports import FetchFailed, FetchRequest

_CHUNK = 64 * 1024


class HttpsBundleFetcher:
    def fetch(self, request: FetchRequest) -> bytes:
        parts = urlsplit(request.url)
        host, port = parts.hostname or "", parts.port or 443
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        context = _context(request)
        deadline = time.monotonic() + request.timeout_seconds
        connection = http.client.HTTPSConnection(host, port, context=context,
                                                 timeout=request.timeout_seconds)
        try:
            raw = socket.create_connection((host, port), timeout=request.timeout_seconds)
            try:
                tls = context.wrap_socket(raw, server_hostname=host)
            except BaseException:
                raw.close()
                raise
            connection.sock = tls
            if request.profile == HTTPS_SPIFFE:
                _check_endpoint_id(tls, request)
            connection.request("GET", path, headers={"Accept": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                raise FetchFailed(f"{request.url} answered HTTP {response.status}", "http_status")
            length = response.getheader("content-length")
            if length is not None and length.isdigit() and int(length) > request.max_bytes:
                raise FetchFailed(f"{request.url}: the bundle is over {request.max_bytes} bytes",
                                  "too_large")
            return _read(response, request, deadline)
        except FetchFailed:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise FetchFailed(f"{request.url}: the endpoint's certificate does not verify: "
                              f"{exc.verify_message}", "tls") from None
        except ssl.SSLError as exc:
            raise FetchFailed(f"{request.url}: TLS failed: {exc.reason or exc}", "tls") from None
        except TimeoutError:
            raise FetchFailed(f"{request.url} did not answer within "
                              f"{request.timeout_seconds:g} s", "timeout") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchFailed(f"cannot fetch {request.url}: {type(exc).__name__}: {exc}",
                              "unreachable") from None
        finally:
            connection.close()


def _context(request: FetchRequest) -> ssl.SSLContext:
    try:
        if request.profile == HTTPS_SPIFFE:
            # Only the roots of the endpoint's trust domain; the host name means nothing here,
            # the SPIFFE ID checked after the handshake is the endpoint's identity.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=request.trust_pem or "")
        elif request.trust_pem:
            context = ssl.create_default_context(cadata=request.trust_pem)
        else:
            context = ssl.create_default_context()
    except (ssl.SSLError, ValueError) as exc:
        raise FetchFailed(f"{request.url}: the roots to verify the endpoint are unusable: "
                          f"{exc}", "tls") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _check_endpoint_id(tls: ssl.SSLSocket, request: FetchRequest) -> None:
    der = tls.getpeercert(binary_form=True)
    found = spiffe_id_of(x509.load_der_x509_certificate(der)) if der else None
    if found is None or str(found) != request.endpoint_spiffe_id:
        raise FetchFailed(f"{request.url} presented {found or 'no SPIFFE ID'}, not the "
                          f"endpoint SPIFFE ID {request.endpoint_spiffe_id}", "tls")


def _read(response: http.client.HTTPResponse, request: FetchRequest, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(_CHUNK):  # one socket read each: a trickle meets the deadline
        size += len(chunk)
        if size > request.max_bytes:
            raise FetchFailed(f"{request.url}: the bundle is over {request.max_bytes} bytes",
                              "too_large")
        if time.monotonic() > deadline:
            raise FetchFailed(f"{request.url} took longer than {request.timeout_seconds:g} s",
                              "timeout")
        chunks.append(chunk)
    return b"".join(chunks)
