"""`--watch-kube-policies`: the PolicyStore's "kube" source kept equal to the cluster's
AuthorizationPolicy objects, by list then watch (the informer pattern).

A list gives every object and a resourceVersion; a watch from there gives each change after
it. A watch that ends cleanly (the server's timeout) resumes from the last resourceVersion
seen, which BOOKMARK events keep fresh; a resourceVersion the server has forgotten (410 Gone)
and any failure (after a capped backoff) start again from a list, which replaces the whole
set, so nothing missed in between survives or is lost.

An object Istio's validation refuses is left out, with a warning naming it and the field; it
never stops the other policies from applying. An invalid *edit* of a policy that was valid
keeps the last valid version in force (a mistyped DENY must not start allowing).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol, cast

from meshca.authz import AuthorizationPolicy, Invalid, parse_policy
from meshca.service.policy_store import PolicyStore
from meshca.service.ports import KubeApiError

log = logging.getLogger(__name__)
SOURCE = "kube"
Event = tuple[str, dict[str, Any]]


class WatchExpired(KubeApiError):
    """410 Gone: the resourceVersion is older than the API server keeps; list again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=410)


class PolicyObjects(Protocol):
    """AuthorizationPolicy objects of a cluster (meshca.infra.kube.policies); calls block."""

    def list(self) -> tuple[str, list[dict[str, Any]]]: ...

    def watch(self, resource_version: str, timeout_seconds: int) -> Iterator[Event]: ...

    def interrupt(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between failed attempts: initial, doubling, capped; a Retry-After wins (capped)."""

    initial: float = 0.5
    maximum: float = 30.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.maximum)
        return min(self.initial * 2.0 ** min(failures, 30), self.maximum)


@dataclass(frozen=True, slots=True)
class _End:
    error: BaseException | None  # None: the server ended the watch


_STOP = object()  # queued when `stopping` is set


async def watch_kube_policies(store: PolicyStore, objects: PolicyObjects, stopping: asyncio.Event, *,
                              executor: Executor | None = None, backoff: Backoff = Backoff(),
                              watch_timeout: int = 300, debounce: float = 0.1) -> None:
    """Keep `store`'s "kube" source in sync until `stopping` is set. Blocking calls run in
    `executor` (the loop's default when None); a watch holds one of its threads while open.
    Changes arriving together are published at once: `debounce` seconds after the last, or
    at most 5 x `debounce` after the first."""
    await _Sync(store, objects, stopping, executor, backoff, watch_timeout, debounce).run()


class _Objects:
    """What the cluster holds, by namespace/name; None for an object that is not valid."""

    def __init__(self) -> None:
        self.by_key: dict[str, AuthorizationPolicy | None] = {}
        self._warned: dict[str, str] = {}  # key -> problem already logged, not repeated on a re-list

    def reset(self, items: list[dict[str, Any]]) -> None:
        before = dict(self.by_key)
        self.by_key.clear()
        for item in items:
            self.apply("ADDED", item, before.get(_key(item)))

    def apply(self, kind: str, obj: Mapping[str, Any],
              previous: AuthorizationPolicy | None = None) -> None:
        key = _key(obj)
        previous = previous or self.by_key.get(key)
        if kind == "DELETED":
            self.by_key.pop(key, None)
            self._warned.pop(key, None)
            return
        try:
            self.by_key[key] = parse_policy(obj)
            self._warned.pop(key, None)
        except Invalid as exc:
            # An invalid edit keeps the last valid version: dropping it would let a DENY policy
            # stop denying because someone mistyped a field (fail closed, not open).
            self.by_key[key] = previous
            if self._warned.get(key) != str(exc):
                kept = "; its last valid version stays in force" if previous else " and not enforced"
                log.warning("AuthorizationPolicy %s is invalid (Istio would refuse it)%s: %s",
                            key, kept, exc)
                self._warned[key] = str(exc)

    def policies(self) -> list[AuthorizationPolicy]:
        return [p for p in self.by_key.values() if p is not None]


class _Sync:
    def __init__(self, store: PolicyStore, objects: PolicyObjects, stopping: asyncio.Event,
                 executor: Executor | None, backoff: Backoff, watch_timeout: int, debounce: float) -> None:
        self._store, self._source, self._stopping = store, objects, stopping
        self._executor, self._backoff = executor, backoff
        self._timeout, self._debounce = watch_timeout, debounce
        self._state = _Objects()
        self._failing: str | None = None  # the error last logged, so a repeat is not logged again

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        version: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if version is None:
                    listed, items = await loop.run_in_executor(self._executor, self._source.list)
                    self._state.reset(items)
                    await self._publish()
                    log.info("watching AuthorizationPolicies: %d listed at resourceVersion %s",
                             len(items), listed)
                    self._recovered()
                    failures, version = 0, listed
                started = time.monotonic()
                version = await self._watch(version)
                if time.monotonic() - started < 1.0:  # a server ending watches at once: no busy loop
                    await self._pause(self._backoff.initial)
            except WatchExpired as exc:
                log.info("AuthorizationPolicy watch expired (%s); listing again", exc)
                version = None
            except Exception as exc:  # noqa: BLE001 - any failure: log it once, back off, list again
                if self._stopping.is_set():
                    break
                self._failed(exc)
                version = None
                retry_after = exc.retry_after if isinstance(exc, KubeApiError) else None
                await self._pause(self._backoff.delay(failures, retry_after))
                failures += 1

    async def _watch(self, version: str) -> str:
        """Apply one watch's events; the resourceVersion to resume from when it ends cleanly."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        halted = threading.Event()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                halted.set()

        def pump() -> None:  # in a thread: the client's stream blocks
            try:
                for event in self._source.watch(version, self._timeout):
                    if halted.is_set():
                        return
                    put(event)
            except Exception as exc:  # noqa: BLE001 - handed to the loop, which decides
                put(_End(exc))
            else:
                put(_End(None))

        pumping = loop.run_in_executor(self._executor, pump)
        stop_waiter = asyncio.ensure_future(self._stopping.wait())
        stop_waiter.add_done_callback(lambda _: queue.put_nowait(_STOP))
        try:
            return await self._consume(queue, version)
        finally:
            stop_waiter.cancel()
            halted.set()
            # Watch.stop() only takes effect once the stream has started: repeat until it ends.
            while not pumping.done():
                self._source.interrupt()
                await asyncio.wait({pumping}, timeout=0.05)

    async def _consume(self, queue: asyncio.Queue[object], version: str) -> str:
        first = last = 0.0
        dirty = False
        try:
            while True:
                timeout = None
                if dirty:
                    due = min(last + self._debounce, first + 5 * self._debounce)
                    timeout = max(due - time.monotonic(), 0.0)
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    await self._publish()
                    dirty = False
                    continue
                if item is _STOP:
                    return version
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return version
                kind, obj = cast(Event, item)
                version = _resource_version(obj) or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._state.apply(kind, obj)
                    last = time.monotonic()
                    first = first if dirty else last
                    dirty = True
                    self._recovered()
        finally:
            if dirty:  # changes received before the watch ended are real: keep them
                await self._publish()

    async def _publish(self) -> None:
        # Compiling thousands of policies takes a while: not on the event loop.
        await asyncio.to_thread(self._store.replace, SOURCE, self._state.policies())

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _failed(self, exc: Exception) -> None:
        problem = str(exc) or type(exc).__name__
        if problem != self._failing:
            log.warning("AuthorizationPolicy watch failed (the last policies stay; retrying): %s",
                        problem, exc_info=not isinstance(exc, KubeApiError))
            self._failing = problem

    def _recovered(self) -> None:
        if self._failing is not None:
            log.info("AuthorizationPolicy watch working again after: %s", self._failing)
            self._failing = None


def _key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return version if isinstance(version, str) and version else None
