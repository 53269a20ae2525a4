"""In-memory `KeySource` (service/key_sources.py): an issuer's keys as a validator sees
them, with scripted refreshes (what a refetch finds) and a count of them."""

from __future__ import annotations

from collections.abc import Mapping

from meshca.core.jwt import VerificationKey


class FakeKeySource:
    def __init__(self, issuer: str | None, keys: Mapping[str, VerificationKey] | None = None
                 ) -> None:
        self.current_issuer = issuer
        self.current = dict(keys or {})
        self.refreshes = 0
        # What the next refresh finds: (issuer, keys), or None for a refresh that fails.
        self.on_refresh: tuple[str, dict[str, VerificationKey]] | None = None

    def issuer(self) -> str | None:
        return self.current_issuer

    def keys(self) -> Mapping[str, VerificationKey]:
        return self.current

    async def refresh(self) -> bool:
        self.refreshes += 1
        if self.on_refresh is None:
            return False
        self.current_issuer, self.current = self.on_refresh[0], dict(self.on_refresh[1])
        return True
