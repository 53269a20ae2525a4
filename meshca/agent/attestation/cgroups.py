"""Pod UID and container ID from the text of `/proc/<pid>/cgroup`. Pure: no I/O.

The kubelet names a pod's cgroup after the pod UID and the runtime names each container's
cgroup after its ID. Layouts understood, cgroup v1 (`<n>:<controllers>:<path>`, one line per
hierarchy) and v2 (`0::<path>`) alike:

- cgroupfs driver: `/kubepods[/burstable|/besteffort]/pod<uid>/<container id>`;
- systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with
  '_' for '-'>.slice/<runtime>-<container id>.scope`, the runtime prefix being
  `cri-containerd-` (containerd), `crio-` (CRI-O) or `docker-` (dockershim); kind's nested
  `kubelet-kubepods-…` slices too.

The path may start above the cgroup namespace's root (`/../../kubepods-…`) when the agent runs
in its own cgroup namespace, so the pod and container are found by segment, not by prefix. The
pod segment must be immediately followed by the container segment, which must be the last: a
process in a pod's cgroup but in no container's, or in a runtime helper's (CRI-O's
`crio-conmon-<id>.scope`), is not a workload and gets None, as does any process outside pods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


# A pod UID is a UUID; a static pod's is the 32-hex hash of its manifest.
def _uuid(sep: str) -> str:
    return sep.join(f"[0-9a-f]{{{n}}}" for n in (8, 4, 4, 4, 12))


_HASH = r"[0-9a-f]{32}"
_POD_CGROUPFS = re.compile(rf"pod({_uuid('-')}|{_HASH})")
# In a systemd slice name '-' separates the parent slices, so the kubelet writes the UID with '_'.
_POD_SYSTEMD = re.compile(
    rf"(?:kubelet-)?kubepods(?:-besteffort|-burstable)?-pod({_uuid('_')}|{_HASH})\.slice"
)
_CONTAINER_ID = r"[0-9a-f]{64}"
_CONTAINER_CGROUPFS = re.compile(_CONTAINER_ID)
_CONTAINER_SYSTEMD = re.compile(rf"(?:cri-containerd|crio|docker)-({_CONTAINER_ID})\.scope")


@dataclass(frozen=True, slots=True)
class PodContainer:
    """Where a process lives: its pod's UID (dashed form) and its container's ID (bare hex)."""

    pod_uid: str
    container_id: str


class CgroupError(ValueError):
    """The cgroup file names more than one pod or container: trust none of them."""


def pod_container(cgroup_text: str) -> PodContainer | None:
    """The pod and container of the process whose `/proc/<pid>/cgroup` is `cgroup_text`; None
    for a process in no container of a pod. Raises CgroupError when hierarchies disagree."""
    found: set[PodContainer] = set()
    for line in cgroup_text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise CgroupError(f"not a cgroup line: {line[:120]!r}")
        located = _from_path(parts[2])
        if located is not None:
            found.add(located)
    if len(found) > 1:
        raise CgroupError("the process's cgroup hierarchies name different pods or containers")
    return found.pop() if found else None


def _from_path(path: str) -> PodContainer | None:
    segments = [s for s in path.split("/") if s]
    if len(segments) < 2:
        return None
    pod_segment, container_segment = segments[-2], segments[-1]
    if pod := _POD_SYSTEMD.fullmatch(pod_segment):
        container = _CONTAINER_SYSTEMD.fullmatch(container_segment)
        if container is None:
            return None
        return PodContainer(pod.group(1).replace("_", "-"), container.group(1))
    if pod := _POD_CGROUPFS.fullmatch(pod_segment):
        if not _CONTAINER_CGROUPFS.fullmatch(container_segment):
            return None
        # cgroupfs pod directories sit under `kubepods` (and the QoS class); insist on it so
        # that an arbitrary `pod<uuid>/<hex>` cgroup elsewhere is not taken for a pod.
        if "kubepods" not in segments[:-2]:
            return None
        return PodContainer(pod.group(1), container_segment)
    return None
