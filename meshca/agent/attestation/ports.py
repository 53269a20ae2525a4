"""What the attestors need from the node, as ports: the process table and the kubelet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from meshca.agent.ports import PeerCredentials
from meshca.errors import PermissionDenied


class AttestationRefused(PermissionDenied):
    """The caller cannot be attested safely (its process exited or was replaced during the
    look-up, its pid is not visible, its cgroups contradict each other): no identity."""


# The peer of a Unix socket connection, as SO_PEERCRED reports it (the agent's pid namespace:
# the host's, with `hostPID: true`).
Caller = PeerCredentials


@dataclass(frozen=True, slots=True)
class PodInfo:
    """One pod of the kubelet's list; `container_ids` are bare IDs (no `containerd://`)."""

    namespace: str
    service_account: str
    name: str
    uid: str
    container_ids: frozenset[str]


class ProcessTable(Protocol):
    """`/proc` as the attestor reads it. Neither method raises for a process that is gone;
    any other failure to read is AttestationRefused."""

    def start_time(self, pid: int) -> int | None:
        """The process's start time (clock ticks after boot, `stat` field 22); None if no such
        process. Together with the pid it names one process: a reused pid has a new one."""

    def cgroup(self, pid: int) -> str | None:
        """The text of `/proc/<pid>/cgroup`; None if no such process."""


class PodSource(Protocol):
    """The pods running on this node. Raises meshca.errors.DependencyError when it cannot
    answer (the kubelet is down, refuses the agent, or answers nonsense)."""

    def pod(self, uid: str) -> PodInfo | None:
        """The pod with this UID, or None if the node runs no such pod."""
