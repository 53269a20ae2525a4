"""Wiring of issue 12's limits: retention in the supervisor, refusal summaries per process."""

from __future__ import annotations

import asyncio
import contextlib
import re

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from meshca.config import Settings
from meshca.core.clock import Clock
from meshca.infra.db.audit import append_audit_many
from meshca.infra.db.lease import SqlLeases
from meshca.infra.db.records import SqlCertificateLog
from meshca.infra.db.retention import SqlRetention
from meshca.infra.lease_holder import this_process
from meshca.service.ports import AuditEntry
from meshca.service.rate_limits import IssuanceRateLimits
from meshca.service.refusal_summary import RefusalSummary, source_address
from meshca.service.retention import RetentionJob, RetentionPolicy
from meshca.transport.metrics import CaMetrics
from meshca.transport.retention_metrics import RetentionCollector

_RETRY_IN = re.compile(r"; retry in [0-9.]+ ?s$")


def start_retention(settings: Settings, engine: Engine, clock: Clock, stop: asyncio.Event,
                    registry: CollectorRegistry) -> list[asyncio.Task[None]]:
    """The supervisor's retention loop and its metrics."""
    policy = RetentionPolicy(settings.audit_retention, settings.certificate_retention)
    job = RetentionJob(SqlRetention(engine), SqlLeases(engine), policy, clock,
                       identity=this_process(), should_stop=stop.is_set)
    RetentionCollector(job, registry)
    return [asyncio.get_running_loop().create_task(job.run(stop, settings.retention_interval))]


def issuance_rate_limits(settings: Settings) -> IssuanceRateLimits:
    return IssuanceRateLimits(settings.issuance_rate_per_source,
                              settings.issuance_rate_per_identity)


def grpc_refusals(settings: Settings, metrics: CaMetrics, records: SqlCertificateLog,
                  stopping: asyncio.Event) -> tuple[RefusalSummary, asyncio.Task[None]]:
    """A worker's summary of refused CreateCertificate callers, written with the certificate
    batches every interval; the worker writes the last interval's at shutdown (`flush_grpc`)."""
    summary = RefusalSummary(counted=lambda code: metrics.refused("grpc", code))

    async def write(entries: list[AuditEntry]) -> None:
        for entry in entries:
            records.append(entry)

    task = asyncio.get_running_loop().create_task(summary.flush_every(
        settings.audit_refusal_interval.total_seconds(), write, stopping))
    return summary, task


async def flush_grpc(summary: RefusalSummary, records: SqlCertificateLog) -> None:
    for entry in summary.take():
        records.append(entry)
    await records.drain()


class AdminRefusals:
    """The admin API's `refused` callback: refusals tallied per source and reason, written
    every interval (`start`) and once more when the admin server stops (`close`)."""

    def __init__(self, settings: Settings, engine: Engine, metrics: CaMetrics) -> None:
        self._interval = settings.audit_refusal_interval.total_seconds()
        self._engine = engine
        self.summary = RefusalSummary(counted=lambda code: metrics.refused("admin", code))
        self._stop = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def __call__(self, entry: AuditEntry) -> None:
        # The actor is the client's address (with a port that changes per connection) before
        # authentication, or the principal whose role was too low. A back-off refusal says how
        # long to wait, different each time: the summary keeps the reason without it.
        address = entry.actor.startswith("https:")
        reason, waited = _RETRY_IN.subn("", entry.detail or "")
        code = "rate_limited" if waited else "credentials" if address else "role"
        self.summary.add(entry.at, source=source_address(entry.actor) if address else entry.actor,
                         action=entry.action, target=entry.target, reason=reason, code=code)

    async def _write(self, entries: list[AuditEntry]) -> None:
        if entries:
            await asyncio.to_thread(append_audit_many, self._engine, entries)

    def start(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(
            self.summary.flush_every(self._interval, self._write, self._stop))

    async def close(self) -> None:
        """After the server stopped: the last interval's summaries."""
        self._stop.set()
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._write(self.summary.take())
