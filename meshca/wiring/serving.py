"""meshca's own TLS serving certificate on disk, kept issued by the current signing CA.

The supervisor re-issues it when the signing generation changes (so it never chains to a
tainted or retired key) and at 2/3 of its life; workers reload their TLS context when the
file changes. Key and chain share one file, replaced atomically, so a reader never pairs a
new certificate with an old key.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509

from meshca.core.authority import SigningAuthority
from meshca.core.clock import Clock
from meshca.infra.keyfiles import KeyEncryptionKey, encrypted_tls_key_pem, write_private_file
from meshca.service.serving_cert import issue_serving_certificate


class ServingCertKeeper:
    def __init__(self, path: Path, names: list[str], trust_domain: str, clock: Clock,
                 kek: KeyEncryptionKey, *, spiffe_path: str = "/meshca") -> None:
        self._path = path
        self._spiffe_path = spiffe_path
        self._kek = kek
        self._names = names
        self._trust_domain = trust_domain
        self._clock = clock
        self._issuer: int | None = None
        self._renew_at: datetime | None = None

    @property
    def path(self) -> Path:
        return self._path

    def ensure(self, authority: SigningAuthority) -> bool:
        """Issue and write a new certificate if the signer changed or renewal is due."""
        now = self._clock.now()
        if (self._issuer == authority.generation_id and self._renew_at is not None
                and now < self._renew_at):
            return False
        serving = issue_serving_certificate(authority, self._names, self._trust_domain, self._clock,
                                            self._spiffe_path)
        # The key is encrypted under the KEK; TLS contexts open it with `kek.tls_password()`.
        write_private_file(self._path, encrypted_tls_key_pem(self._kek, serving.key)
                           + serving.chain_pem.encode())
        leaf = x509.load_pem_x509_certificate(serving.chain_pem.encode())
        begins, ends = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        self._issuer = authority.generation_id
        self._renew_at = begins + (ends - begins) * 2 / 3
        return True
