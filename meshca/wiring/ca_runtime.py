"""Building the CA side of a process: its source, its reloader and (supervisor) the rotator."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from meshca.config import Settings
from meshca.core.clock import Clock
from meshca.core.jwt_signing import KEY_TYPES
from meshca.infra.cacerts import PluggedCaError, PluggedCaWatcher, load_plugged_ca
from meshca.infra.db.ca_journal import SqlCaJournal
from meshca.infra.db.lease import SqlLeases
from meshca.infra.lease_holder import this_process
from meshca.service.ca_lifecycle import CaLifecycle, LifecycleProfile
from meshca.service.ca_reload import CaReloader
from meshca.service.ca_rotator import CaRotator
from meshca.service.ca_source import CaSource, JournalCaSource, PluggedCaSource
from meshca.wiring.keystore import KeyBackend


def serving_file(settings: Settings) -> Path:
    """meshca's TLS serving key and chain, in one file (see wiring/serving.py)."""
    return settings.data_dir / "tls" / "serving.pem"


def lifecycle_for(settings: Settings, engine: Engine, clock: Clock,
                  keys: KeyBackend) -> CaLifecycle:
    profile = LifecycleProfile(
        key_type=settings.ca_key_type, trust_domain=settings.trust_domain,
        organization=settings.ca_organization, root_ttl=settings.root_ttl,
        intermediate_ttl=settings.intermediate_ttl,
        jwt_key_type=KEY_TYPES[settings.jwt_key_type],
        cross_sign=settings.root_rotation == "cross-sign")
    return CaLifecycle(SqlCaJournal(engine), keys, profile,
                       settings.rotation_policy, clock, upstream=keys.upstream)


def ca_source(settings: Settings, engine: Engine, clock: Clock, keys: KeyBackend, *,
              publishes: bool) -> CaSource:
    """Raises ValueError with one clear sentence when a plugged-in CA cannot be used."""
    journal = SqlCaJournal(engine)
    if settings.ca_dir is None:
        return JournalCaSource(journal, keys)
    try:
        plugged = load_plugged_ca(settings.ca_dir, clock.now())
    except PluggedCaError as exc:
        raise ValueError(f"--ca-dir {settings.ca_dir}: {exc}") from None
    return PluggedCaSource(PluggedCaWatcher(settings.ca_dir, plugged), journal, clock,
                           publishes=publishes)


def reloader_for(settings: Settings, engine: Engine, clock: Clock, keys: KeyBackend, *,
                 publishes: bool) -> CaReloader:
    source = ca_source(settings, engine, clock, keys, publishes=publishes)
    return CaReloader(source, watch_files=[serving_file(settings)])


def rotator_for(settings: Settings, engine: Engine, clock: Clock,
                keys: KeyBackend) -> CaRotator | None:
    if settings.ca_dir is not None:
        return None  # meshca rotates nothing it does not own
    health = keys.health
    return CaRotator(lifecycle_for(settings, engine, clock, keys), SqlCaJournal(engine),
                     SqlLeases(engine), settings.rotation_policy, clock,
                     identity=this_process(),
                     waiting=health.rotation_waiting if health is not None else lambda _: None)


@dataclass
class SupervisorCa:
    """The supervisor's CA side: what the admin API, metrics and publishing read."""

    reloader: CaReloader
    rotator: CaRotator | None
    plugged: PluggedCaSource | None
    loop: asyncio.AbstractEventLoop
    clock: Clock
    # Other reloaders in this process (the in-process worker's): woken with this one, so a
    # change made here is served here at once; other processes see it within the interval.
    also_wake: list[CaReloader] = field(default_factory=list)

    def changed(self) -> None:
        """After a change of the journal by this process (from any thread): reload now."""
        for reloader in (self.reloader, *self.also_wake):
            self.loop.call_soon_threadsafe(reloader.wake)
        if self.rotator is not None:  # whatever the change made due (e.g. PARENT_ROTATED)
            self.loop.call_soon_threadsafe(self.rotator.wake)


async def start_supervisor_ca(settings: Settings, engine: Engine, clock: Clock,
                              stop: asyncio.Event, keys: KeyBackend,
                              ) -> tuple[SupervisorCa, list[asyncio.Task[None]]]:
    reloader = await asyncio.to_thread(reloader_for, settings, engine, clock, keys,
                                       publishes=True)
    rotator = rotator_for(settings, engine, clock, keys)
    source = reloader.source
    plugged = source if isinstance(source, PluggedCaSource) else None
    loop = asyncio.get_running_loop()
    ca = SupervisorCa(reloader, rotator, plugged, loop, clock)
    interval = settings.ca_reload_interval.total_seconds()
    tasks = [loop.create_task(reloader.run(stop, interval))]
    if rotator is not None:
        tasks.append(loop.create_task(rotator.run(stop, changed=ca.changed)))
    return ca, tasks
