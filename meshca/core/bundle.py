"""The trust bundle: every root a peer must trust, as one PEM string."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


@dataclass(frozen=True, slots=True)
class TrustBundle:
    roots: tuple[x509.Certificate, ...]
    pem: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.roots:
            raise ValueError("a trust bundle needs at least one root")
        text = "".join(r.public_bytes(Encoding.PEM).decode("ascii") for r in self.roots)
        object.__setattr__(self, "pem", text)


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode("ascii")
