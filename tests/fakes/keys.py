"""An in-memory `KeyBackend` (service/ca_ports.py): local keys in a dict, and optionally
"remote" keys (as Vault Transit) that are created and used in place."""

from __future__ import annotations

from collections.abc import Callable

from meshca.core.keys import KeyType, SigningKey
from meshca.core.remote_signing import LocalSigner, Signer, SignerUnavailable
from meshca.service.ca_ports import KeyServiceHealth, RemoteKey, RemoteKeys


class MemoryKeyStore:
    def __init__(self) -> None:
        self.stored: dict[str, SigningKey] = {}
        self.on_put: Callable[[str], None] = lambda _: None  # runs before the key is kept

    def put(self, name: str, key: SigningKey) -> str:
        self.on_put(name)
        location = f"memory:{name}"
        self.stored[location] = key
        return location

    def load(self, location: str) -> SigningKey:
        return self.stored[location]


class _RemoteKey(LocalSigner):
    def __init__(self, private_key: SigningKey, location: str) -> None:
        super().__init__(private_key)
        self.location = location


class FakeRemoteKeys:
    """Keys created "inside the service": meshca sees only their location and a signer."""

    def __init__(self) -> None:
        self.keys: dict[str, SigningKey] = {}
        self.unavailable = False

    def create(self, name: str, key_type: KeyType) -> RemoteKey:
        if self.unavailable:
            raise SignerUnavailable("fake key service is away")
        location = f"remote:{name}"
        self.keys[location] = key_type.generate()
        return _RemoteKey(self.keys[location], location)

    def signer(self, location: str) -> Signer:
        if self.unavailable:
            raise SignerUnavailable("fake key service is away")
        return LocalSigner(self.keys[location])


class FakeKeyBackend:
    def __init__(self, *, remote_kinds: frozenset[str] = frozenset()) -> None:
        self.memory = MemoryKeyStore()
        self.fake_remote = FakeRemoteKeys() if remote_kinds else None
        self._remote_kinds = remote_kinds

    @property
    def keys(self) -> MemoryKeyStore:
        return self.memory

    @property
    def remote(self) -> RemoteKeys | None:
        return self.fake_remote

    @property
    def health(self) -> KeyServiceHealth | None:
        return None

    def creates_remotely(self, kind: str) -> bool:
        return self.fake_remote is not None and kind in self._remote_kinds

    def signer(self, location: str) -> Signer:
        if location.startswith("remote:"):
            assert self.fake_remote is not None
            return self.fake_remote.signer(location)
        return LocalSigner(self.memory.load(location))
