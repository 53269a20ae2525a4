"""Checking certificate chains as relying parties do: OpenSSL's `verify -x509_strict`, and
Go-style path building (`cryptography.x509.verification`), each given only the roots named."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store


def pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certificates)


def openssl_verify(roots: Sequence[x509.Certificate], untrusted: Sequence[x509.Certificate],
                   leaf: x509.Certificate, *, purpose: str | None = None) -> subprocess.CompletedProcess[str]:
    """`openssl verify -x509_strict` trusting only `roots`; the answer as run (check returncode)."""
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        (folder / "roots.pem").write_bytes(pem(roots))
        (folder / "leaf.pem").write_bytes(pem([leaf]))
        args = ["openssl", "verify", "-x509_strict", "-CAfile", str(folder / "roots.pem")]
        if untrusted:
            (folder / "untrusted.pem").write_bytes(pem(untrusted))
            args += ["-untrusted", str(folder / "untrusted.pem")]
        if purpose:
            args += ["-purpose", purpose]
        return subprocess.run([*args, str(folder / "leaf.pem")], capture_output=True, text=True,
                              timeout=30)


def path_to_root(roots: Sequence[x509.Certificate], untrusted: Sequence[x509.Certificate],
                 leaf: x509.Certificate, at: datetime | None = None) -> list[x509.Certificate]:
    """The chain Go-style path building finds from a client leaf to one of `roots`;
    raises `VerificationError` when there is none."""
    builder = PolicyBuilder().store(Store(list(roots)))
    if at is not None:
        builder = builder.time(at)
    verified = builder.build_client_verifier().verify(leaf, list(untrusted))
    return list(verified.chain)
