"""The `unix` attestor: `--workload NAME=uid:1000[,gid:1000]=spiffe://<td>/<path>` entries,
matched against the caller's SO_PEERCRED uid and gid. For VMs and tests: it trusts the node's
user accounts, nothing more.

An entry names one or more selectors (`uid:<n>`, `gid:<n>`, each at most once); a caller
matches when every selector does. Every matching entry's identity is the caller's, in the
order given; none matching is no identity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from meshca.agent.attestation.ports import Caller
from meshca.core.spiffe import SpiffeId
from meshca.errors import ConfigurationError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel, never an owner
_SELECTOR_KINDS = ("uid", "gid")
_SYNTAX = "NAME=uid:<n>[,gid:<n>]=spiffe://<trust domain>/<path>"


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    name: str
    uid: int | None
    gid: int | None
    spiffe_id: SpiffeId

    def matches(self, caller: Caller) -> bool:
        return (self.uid is None or self.uid == caller.uid) and (self.gid is None or self.gid == caller.gid)


def parse_entry(text: str, trust_domain: str) -> WorkloadEntry:
    """One `--workload` value. Raises ConfigurationError naming the entry and what is wrong."""
    parts = text.split("=", 2)
    if len(parts) != 3:
        raise ConfigurationError(f"--workload {text!r}: expected {_SYNTAX}")
    name, selectors, uri = parts
    if not _NAME.fullmatch(name):
        raise ConfigurationError(f"--workload {text!r}: the name must be 1-63 letters, digits, "
                                 "'.', '-' or '_', starting with a letter or digit")
    found: dict[str, int] = {}
    for selector in selectors.split(","):
        kind, colon, value = selector.partition(":")
        if not colon or kind not in _SELECTOR_KINDS:
            raise ConfigurationError(f"--workload {name}: selector {selector!r} is not uid:<n> or gid:<n>")
        if kind in found:
            raise ConfigurationError(f"--workload {name}: {kind} is given twice")
        if not value.isascii() or not value.isdigit() or int(value) > _MAX_ID:
            raise ConfigurationError(f"--workload {name}: {kind} {value!r} is not a number "
                                     f"from 0 to {_MAX_ID}")
        found[kind] = int(value)
    try:
        spiffe_id = SpiffeId.parse(uri)
    except ValueError as exc:
        raise ConfigurationError(f"--workload {name}: {uri!r} is not a SPIFFE ID: {exc}") from exc
    if spiffe_id.trust_domain != trust_domain:
        raise ConfigurationError(f"--workload {name}: {spiffe_id} is outside the trust domain "
                                 f"{trust_domain!r}")
    if not spiffe_id.path:
        raise ConfigurationError(f"--workload {name}: the trust domain itself is not a workload's ID")
    return WorkloadEntry(name, found.get("uid"), found.get("gid"), spiffe_id)


def parse_entries(texts: Iterable[str], trust_domain: str) -> tuple[WorkloadEntry, ...]:
    entries = tuple(parse_entry(t, trust_domain) for t in texts)
    names = [e.name for e in entries]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigurationError(f"--workload names must be unique: {', '.join(duplicates)} repeated")
    return entries


class UnixAttestor:
    def __init__(self, entries: Iterable[WorkloadEntry]) -> None:
        self._entries = tuple(entries)

    def attest(self, caller: Caller) -> tuple[SpiffeId, ...]:
        seen: list[SpiffeId] = []
        for entry in self._entries:
            if entry.matches(caller) and entry.spiffe_id not in seen:
                seen.append(entry.spiffe_id)
        return tuple(seen)
