"""Every process follows the policies stored through the admin API.

The admin API writes them to the database (`authz_state.version` grows with every change);
each worker polls that version and recompiles its own `PolicyStore` when it moved, so a PUT
on one replica is enforced by every worker of every replica within the poll interval.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from meshca.authz import Invalid
from meshca.authz.documents import parse_policies
from meshca.errors import StoreUnavailable
from meshca.service.policy_store import PolicyStore

log = logging.getLogger(__name__)


class StoredPolicyRows(Protocol):
    def version(self) -> int: ...

    def all(self) -> tuple[int, list[Any]]: ...


def load_stored(store: PolicyStore, stored: StoredPolicyRows) -> int:
    """Blocking: compile what the database holds into `store`; the version loaded."""
    version, rows = stored.all()
    store.replace("api", parse_policies([row.document for row in rows]))
    return version


async def follow_stored_policies(store: PolicyStore, stored: StoredPolicyRows,
                                 stopping: asyncio.Event, interval: float) -> None:
    loaded: int | None = None
    failing = False
    while not stopping.is_set():
        try:
            if await asyncio.to_thread(stored.version) != loaded:
                loaded = await asyncio.to_thread(load_stored, store, stored)
            failing = False
        except (StoreUnavailable, OSError, Invalid) as exc:
            if not failing:  # once per outage, not on every poll
                log.warning("stored authorization policies not reloaded (keeping the last "
                            "set): %s", exc)
            failing = True
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except TimeoutError:
            pass
