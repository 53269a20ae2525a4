"""The policy set meshca enforces: merged from its sources, compiled, swapped atomically.

Sources (each replaced whole when it changes): policies stored through the admin API, a
`--policy-dir` of YAML/JSON files, and AuthorizationPolicy objects watched in Kubernetes. A
change compiles a new `PolicySet` beside the current one and swaps one reference, so a
decision in flight always sees one whole version, never a mix.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from meshca.authz import (
    AuthorizationPolicy,
    AuthzRequest,
    Decision,
    Invalid,
    MeshConfig,
    PolicySet,
    evaluate,
    load_documents,
    parse_policies,
)

log = logging.getLogger(__name__)
SOURCES = ("api", "dir", "kube")  # a later source wins a namespace/name both define
POLICY_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    policy: AuthorizationPolicy
    source: str


class PolicyStore:
    def __init__(self, mesh: MeshConfig | None = None) -> None:
        self._mesh = mesh or MeshConfig()
        self._lock = threading.Lock()  # writers only; readers take `_set` as it is
        self._sources: dict[str, tuple[AuthorizationPolicy, ...]] = {}
        self._version = 0
        self._set = PolicySet.build((), self._mesh)
        self._origin: dict[str, str] = {}

    @property
    def current(self) -> PolicySet:
        return self._set

    def replace(self, source: str, policies: Iterable[AuthorizationPolicy]) -> PolicySet:
        """Everything `source` holds now; compiles and swaps in a new version."""
        assert source in SOURCES, source
        with self._lock:
            self._sources[source] = tuple(policies)
            merged: dict[str, AuthorizationPolicy] = {}
            origin: dict[str, str] = {}
            for name in SOURCES:
                for policy in self._sources.get(name, ()):
                    if policy.key in merged and origin[policy.key] != name:
                        log.warning("authorization policy %s from %s replaces the one from %s",
                                    policy.key, name, origin[policy.key])
                    merged[policy.key], origin[policy.key] = policy, name
            self._version += 1
            built = PolicySet.build(merged.values(), self._mesh, self._version)
            self._set, self._origin = built, origin  # the swap: one reference each
            return built

    def source_of(self, key: str) -> str | None:
        return self._origin.get(key)

    def check(self, request: AuthzRequest, mesh: MeshConfig | None = None,
              explain: bool = False) -> Decision:
        policies = self._set
        if mesh is not None:
            policies = policies.with_mesh(mesh)
        return evaluate(policies, request, with_explain=explain)


def load_policy_dir(directory: Path) -> list[AuthorizationPolicy]:
    """Every policy in the directory's *.yaml, *.yml and *.json files (not recursive); Invalid
    names the file and field of every problem."""
    policies: list[AuthorizationPolicy] = []
    problems: list[Invalid] = []
    for path in sorted(p for p in directory.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file()):
        try:
            documents = load_documents(path.read_text(encoding="utf-8"), source=path.name)
            policies.extend(parse_policies(documents, prefix=path.name))
        except Invalid as exc:
            problems.append(exc)
    if problems:
        raise type(problems[0])([e for p in problems for e in p.errors])
    return parse_policies([p.document for p in policies]) if policies else []


def _snapshot(directory: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.iterdir()
                        if p.suffix in POLICY_SUFFIXES and p.is_file()))


async def watch_policy_dir(store: PolicyStore, directory: Path, stopping: asyncio.Event,
                           interval: float = 2.0) -> None:
    """Reload the directory whenever a file changes; a bad file keeps the last good set."""
    seen: tuple[tuple[str, int, int], ...] | None = None
    while not stopping.is_set():
        try:
            snapshot = await asyncio.to_thread(_snapshot, directory)
            if snapshot != seen:
                policies = await asyncio.to_thread(load_policy_dir, directory)
                store.replace("dir", policies)
                log.info("loaded %d authorization policies from %s", len(policies), directory)
                seen = snapshot
        except Invalid as exc:
            log.error("policy dir %s not reloaded (the previous set stays): %s", directory, exc)
            seen = snapshot
        except OSError as exc:
            log.error("policy dir %s unreadable: %s", directory, exc)
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except TimeoutError:
            pass
