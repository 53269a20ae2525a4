"""The reload loop outlives a failed reload (database, Vault) and picks the change up later."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from meshca.core.remote_signing import SignerUnavailable
from meshca.errors import CaUnavailable
from meshca.service.ca_reload import CaReloader
from meshca.service.ca_source import LoadedCa
from tests.unit.pki import ec_key, make_authority


class FlakySource:
    """Version 1, then version 2 whose first loads fail the ways a real source can."""

    def __init__(self, failures: list[Exception]) -> None:
        self.version_now = 1
        self.failures = failures
        self.authorities = {1: make_authority(ec_key(n=1)), 2: make_authority(ec_key(n=2))}

    def version(self) -> Hashable:
        return self.version_now

    def load(self) -> LoadedCa:
        if self.version_now == 2 and self.failures:
            raise self.failures.pop(0)
        return LoadedCa(self.authorities[self.version_now], self.version_now)


def test_a_failed_reload_keeps_the_current_ca_and_the_loop_retries() -> None:
    source = FlakySource([SignerUnavailable("vault is away"), CaUnavailable("no signer yet")])
    reloader = CaReloader(source)
    seen: list[int] = []
    reloader.add_listener(lambda authority: seen.append(id(authority)))

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(reloader.run(stop, 0.05))
        source.version_now = 2
        for _ in range(100):
            if reloader.sequence == 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task

    first = reloader.current
    asyncio.run(scenario())
    assert source.failures == []  # both failures were met and survived
    assert reloader.current is source.authorities[2] and reloader.current is not first
    assert seen == [id(source.authorities[2])]  # listeners hear of the change once
