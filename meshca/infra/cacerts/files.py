"""Reading the four cacerts files: all four or a one-line refusal, never a torn read.

Key file permissions looser than 0600 are a warning, not a refusal: Kubernetes mounts secret
volumes 0644 unless `defaultMode` says otherwise, inside a pod only meshca runs in, and
refusing would break the most common deployment. Group- or world-writable files are warned
about the same way.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from meshca.infra.cacerts.layout import (
    CA_FILES,
    CA_KEY,
    MAX_FILE_BYTES,
    PluggedCaError,
    PluggedCaMissing,
)
from meshca.infra.secret_files import FIX as SECRET_FILE_FIX
from meshca.infra.secret_files import readable_by_others

_READ_ATTEMPTS = 3


def read_stable(directory: Path) -> dict[str, bytes]:
    """The four files' bytes, read between two identical stat snapshots (no torn read)."""
    for _ in range(_READ_ATTEMPTS):
        present = [name for name in CA_FILES if (directory / name).is_file()]
        if not present:
            raise PluggedCaMissing(
                f"no plugged-in CA files in {directory} (expected {', '.join(CA_FILES)})"
            )
        if len(present) < len(CA_FILES):
            missing = [name for name in CA_FILES if name not in present]
            raise PluggedCaError(
                f"incomplete plugged-in CA in {directory}: missing {', '.join(missing)} "
                f"(all four of {', '.join(CA_FILES)} are required, or none)"
            )
        before = _stat_signature(directory)
        if before is None:
            continue
        contents = {name: _read_file(directory / name) for name in CA_FILES}
        if _stat_signature(directory) == before:
            return contents
    raise PluggedCaError(f"the plugged-in CA files in {directory} kept changing while being read")


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise PluggedCaError(f"{path.name} disappeared while being read") from None
    except OSError as exc:
        raise PluggedCaError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_FILE_BYTES:
        raise PluggedCaError(f"{path.name} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _stat_signature(directory: Path) -> tuple[tuple[int, int, int, int], ...] | None:
    try:
        stats = [os.stat(directory / name) for name in CA_FILES]
    except OSError:
        return None
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def permission_warnings(directory: Path) -> list[str]:
    warnings: list[str] = []
    for name in CA_FILES:
        try:
            st = os.stat(directory / name)
        except OSError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if name == CA_KEY and readable_by_others(st):
            warnings.append(
                f"{CA_KEY} is readable by other users (mode {mode:04o}); loaded anyway, as "
                f"Kubernetes mounts secrets 0644 by default: {SECRET_FILE_FIX}"
            )
        elif name != CA_KEY and mode & 0o022:
            warnings.append(f"{name} is writable by group or others (mode {mode:04o})")
    return warnings


def content_fingerprint(contents: dict[str, bytes]) -> str:
    """SHA-256 over the four files' names, lengths and bytes."""
    digest = hashlib.sha256()
    for name in CA_FILES:
        data = contents[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
