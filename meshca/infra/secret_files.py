"""Who besides meshca can read a file that holds a secret (a key, the KEK).

Kubernetes mounts a Secret's files owned by root, with the pod's fsGroup as their group: a
container that runs as a non-root user reads them only through that group (defaultMode 0440).
That shape is not exposure, since the group is the pod's own; any other group or world bit is."""

from __future__ import annotations

import os
import stat

# What to tell an operator, wherever a secret file is too open.
FIX = ("make it 0600 (on Kubernetes: defaultMode 0400 on the Secret volume, or 0440 with the "
       "pod's fsGroup when meshca runs as a non-root user)")


def readable_by_others(st: os.stat_result) -> bool:
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        return True
    if not mode & 0o070:
        return False
    return not _mounted_for_this_group(st)


def _mounted_for_this_group(st: os.stat_result) -> bool:
    """Owned by root, group-readable by this process's own group, and this process not root."""
    return st.st_uid == 0 and os.getuid() != 0 and st.st_gid == os.getgid()
