"""Where a process gets its signing CA: meshca's own journal, or a plugged-in cacerts dir.

`version()` is cheap and polled; `load()` is called only when the version moved. Both are
blocking (database, files): call them from a worker thread.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes

from meshca.core.authority import SigningAuthority
from meshca.core.bundle import certificate_pem
from meshca.core.certificates import format_serial
from meshca.core.clock import Clock
from meshca.core.jwt_signing import EMPTY_KEY_SET, JwtKeySet
from meshca.core.keys import KeyType
from meshca.errors import CaUnavailable
from meshca.service.ca_ports import CaJournal, KeyBackend, PluggedCa, PluggedCaFiles
from meshca.service.ca_setup import load_jwt_keys, load_signing_authority


@dataclass(frozen=True, slots=True)
class LoadedCa:
    authority: SigningAuthority
    sequence: int  # spiffe_sequence of the bundle in `authority` (or older, never newer)
    jwt: JwtKeySet = EMPTY_KEY_SET  # JWT-SVID keys (none with a plugged-in CA)


class CaSource(Protocol):
    def version(self) -> Hashable: ...

    def load(self) -> LoadedCa: ...


class JournalCaSource:
    """meshca's own CA: the signing generation and the published roots of the journal."""

    def __init__(self, journal: CaJournal, keys: KeyBackend) -> None:
        self._journal = journal
        self._keys = keys

    def version(self) -> Hashable:
        return self._journal.version()

    def load(self) -> LoadedCa:
        sequence = self._journal.version()[0]  # read first: the keys loaded next are as new
        return LoadedCa(load_signing_authority(self._journal, self._keys), sequence,
                        load_jwt_keys(self._journal, self._keys))


class PluggedCaSource:
    """An operator's CA files (`--ca-dir`), reloaded when they change and verify.

    The signing certificate is recorded as a `plugged` journal row so that issued
    certificates can name their issuer. The process that `publishes` (the supervisor) also
    moves the bundle sequence when the roots change, so `spiffe_sequence` follows them.
    """

    def __init__(self, watcher: PluggedCaFiles, journal: CaJournal, clock: Clock, *,
                 publishes: bool) -> None:
        if watcher.current is None:
            raise ValueError("the plugged-in CA must be loaded before it is served")
        self._watcher = watcher
        self._journal = journal
        self._clock = clock
        self._publishes = publishes
        self._roots_published: tuple[bytes, ...] | None = None

    @property
    def watcher(self) -> PluggedCaFiles:
        return self._watcher

    def version(self) -> Hashable:
        self._watcher.poll(self._clock.now())
        current = self._watcher.current
        return current.fingerprint if current is not None else None

    def load(self) -> LoadedCa:
        ca = self._watcher.current
        if ca is None:
            raise CaUnavailable("no plugged-in CA loaded")
        generation = self._register(ca)
        roots = tuple(sorted(r.fingerprint(hashes.SHA256()) for r in ca.roots))
        if self._publishes and roots != self._roots_published:
            self._journal.bump_sequence(self._clock.now())
            self._roots_published = roots
        return LoadedCa(ca.authority(generation), self._journal.version()[0])

    def _register(self, ca: PluggedCa) -> int:
        cert = ca.certificate
        return self._journal.register_plugged(
            certificate_pem=certificate_pem(cert), serial=format_serial(cert.serial_number),
            subject=cert.subject.rfc4514_string(), key_type=_key_type(ca),
            location=f"plugged:{ca.key_file}", not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc, now=self._clock.now())


def _key_type(ca: PluggedCa) -> str:
    try:
        return KeyType.of(ca.private_key).value
    except (KeyError, ValueError):  # a key size meshca would not generate, still usable
        return type(ca.private_key).__name__[:16]
