"""ext_authz over mutual TLS (`--ext-authz-tls`): meshca's own serving certificate, and a client
certificate that chains to meshca's trust bundle is required of every caller.

grpc asks `_fetch` at each new connection; it returns a new configuration only after `reload`
(the CA reloader's listener: a new bundle, or the serving certificate re-issued), so a
rotation is picked up without a restart and a handshake costs no file read.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


class ExtAuthzTls:
    def __init__(self, serving_file: Path, password: bytes | None, bundle_pem: str) -> None:
        self._serving_file = serving_file
        self._password = password
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(bundle_pem), self._fetch, require_client_authentication=True)

    def reload(self, bundle_pem: str) -> None:
        """Re-read the serving certificate and take `bundle_pem` as the client roots."""
        self._pending = self._configuration(bundle_pem)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        pending, self._pending = self._pending, None
        return pending

    def _configuration(self, bundle_pem: str) -> grpc.ServerCertificateConfiguration:
        key, chain = serving_key_and_chain(self._serving_file.read_bytes(), self._password)
        return grpc.ssl_server_certificate_configuration([(key, chain)],
                                                         root_certificates=bundle_pem.encode())


def serving_key_and_chain(text: bytes, password: bytes | None) -> tuple[bytes, bytes]:
    """The serving file's (encrypted) key as plain PKCS#8 PEM, which is all grpc takes, and
    its certificate chain."""
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(text)]
    keys = [block for label, block in blocks if label.endswith(b"PRIVATE KEY")]
    chain = b"".join(block if block.endswith(b"\n") else block + b"\n"
                     for label, block in blocks if label == b"CERTIFICATE")
    if len(keys) != 1 or not chain:
        raise ValueError("the serving file must hold one private key and its certificate chain")
    key = serialization.load_pem_private_key(keys[0], password)
    plain = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    return plain, chain
