"""Keeps the trust bundle in the `istio-ca-root-cert` ConfigMap of every selected namespace.

One pass (`publish_once`) asks the API server for the namespaces a label selector picks and,
in one more list call, which of them already hold the current bundle; only the others are
written, each with a read-compare-write cycle. So a pass over an unchanged mesh writes
nothing, a new namespace gets the ConfigMap, a changed bundle is rewritten everywhere, and a
ConfigMap someone edited by hand is put back. A namespace the API server refuses is reported
and the others carry on. `run` repeats passes until stopped, never letting a failure end it;
`wake` asks for the next pass at once (e.g. right after the bundle changed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from meshca.service.pause import pause
from meshca.service.ports import KubeApiError

log = logging.getLogger(__name__)

T = TypeVar("T")
SyncOutcome = Literal["created", "updated", "unchanged"]
_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


class RootCertConfigMaps(Protocol):
    """One cluster's root-cert ConfigMaps (infra/kube/configmaps.py). Calls block."""

    def namespaces(self, selector: str) -> list[str]:
        """Namespaces the label selector picks (excluding ones being deleted)."""
        ...

    def holding(self, bundle_pem: str) -> set[str]:
        """Namespaces whose ConfigMap already holds exactly this bundle, meshca-labelled."""
        ...

    def sync(self, namespace: str, bundle_pem: str) -> SyncOutcome:
        """Create or update the namespace's ConfigMap; "unchanged" when it already matched."""
        ...


class KubeCaller(Protocol):
    """meshca.service.kube_calls.KubeCalls: runs a blocking call off the loop, rate-limited."""

    async def call(self, kind: str, fn: Callable[[], T]) -> T: ...


@dataclass(frozen=True, slots=True)
class PublishReport:
    """One pass: the selected namespaces, sorted, each in exactly one of the other three fields."""

    namespaces: tuple[str, ...]
    written: tuple[str, ...]  # created or updated
    unchanged: tuple[str, ...]
    failed: dict[str, str]  # namespace -> why

    @property
    def ok(self) -> bool:
        return not self.failed


class BundlePublisher:
    def __init__(self, calls: KubeCaller, selector: str, bundle: Callable[[], str], *,
                 configmaps: RootCertConfigMaps, concurrency: int = 4) -> None:
        """`bundle` returns the PEM trust bundle to publish; `concurrency` bounds the writes in
        flight (they share the Kubernetes call pool with token reviews)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._calls = calls
        self._selector = selector
        self._bundle = bundle
        self._configmaps = configmaps
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._failing: dict[str, str] = {}
        self.last_report: PublishReport | None = None

    @property
    def selector(self) -> str:
        return self._selector

    def wake(self) -> None:
        """Start the next pass of `run` now rather than at the end of the interval.

        Call it from the event loop's thread (from another: `loop.call_soon_threadsafe(wake)`).
        """
        self._wake.set()

    async def publish_once(self) -> PublishReport:
        """One pass. Raises KubeApiError when the namespaces or ConfigMaps cannot be listed,
        ValueError when the bundle holds no certificate (nothing is written then)."""
        pem = self._bundle()
        if _PEM_CERTIFICATE not in pem:
            raise ValueError("the trust bundle holds no PEM certificate; not publishing it")
        configmaps = self._configmaps
        selected = sorted(set(await self._calls.call(
            "namespaces", lambda: configmaps.namespaces(self._selector))))
        holding = await self._calls.call("configmaps", lambda: configmaps.holding(pem))
        limit = asyncio.Semaphore(self._concurrency)

        async def sync(namespace: str) -> SyncOutcome | KubeApiError:
            async with limit:
                try:
                    return await self._calls.call("configmaps", lambda: configmaps.sync(namespace, pem))
                except KubeApiError as exc:
                    return exc

        pending = [ns for ns in selected if ns not in holding]
        outcomes = dict(zip(pending, await asyncio.gather(*(sync(ns) for ns in pending)), strict=True))
        written = tuple(ns for ns, o in outcomes.items() if o in ("created", "updated"))
        failed = {ns: str(o) for ns, o in outcomes.items() if isinstance(o, KubeApiError)}
        unchanged = tuple(ns for ns in selected if ns not in written and ns not in failed)
        report = PublishReport(tuple(selected), written, unchanged, failed)
        self.last_report = report
        return report

    async def run(self, stop: asyncio.Event, interval_seconds: float,
                  leader: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Pass after pass, `interval_seconds` apart (or sooner after `wake`), until `stop` is set.

        With `leader`, a pass runs only while it says this replica publishes (several replicas
        each holding a slightly different bundle for a moment must not take turns writing)."""
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self._wake = asyncio.Event()  # of this loop; run() starts with a pass anyway
        while not stop.is_set():
            self._wake.clear()
            if leader is None or await leader():
                await self._pass()
            await pause(stop, self._wake, interval_seconds)

    async def _pass(self) -> None:
        try:
            report = await self.publish_once()
        except KubeApiError as exc:
            log.warning("root-cert ConfigMaps: cannot list namespaces or ConfigMaps (selector %r): %s",
                        self._selector, exc)
            return
        except ValueError as exc:
            log.error("root-cert ConfigMaps: %s", exc)
            return
        except Exception:  # a publisher bug must not end the loop; it is logged with its traceback
            log.exception("root-cert ConfigMaps: publishing pass failed")
            return
        if report.written:
            log.info("root-cert ConfigMap written in %d namespace(s): %s", len(report.written),
                     ", ".join(report.written))
        for namespace, reason in sorted(report.failed.items()):
            # Log a failure when it starts or changes, not again on every pass while it lasts.
            level = logging.DEBUG if self._failing.get(namespace) == reason else logging.WARNING
            log.log(level, "root-cert ConfigMap in namespace %s not published: %s", namespace, reason)
        for namespace in sorted(set(self._failing) - set(report.failed)):
            if namespace in report.namespaces:
                log.info("root-cert ConfigMap in namespace %s published again", namespace)
        self._failing = dict(report.failed)
