"""When a file holding a secret counts as readable by others (meshca/infra/secret_files.py)."""

from __future__ import annotations

import os

import pytest

from meshca.infra.secret_files import readable_by_others


def _stat(mode: int, uid: int, gid: int) -> os.stat_result:
    # st_mode, st_ino, st_dev, st_nlink, st_uid, st_gid, st_size, st_atime, st_mtime, st_ctime
    return os.stat_result((0o100000 | mode, 1, 1, 1, uid, gid, 44, 0, 0, 0))


@pytest.fixture
def non_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as the chart runs it: user and group 10001."""
    monkeypatch.setattr(os, "getuid", lambda: 10001)
    monkeypatch.setattr(os, "getgid", lambda: 10001)


@pytest.mark.parametrize(("mode", "uid", "gid", "exposed"), [
    (0o600, 10001, 10001, False),   # the owner's alone
    (0o400, 0, 0, False),
    (0o440, 0, 10001, False),       # a Secret volume with the pod's fsGroup: the way in for non-root
    (0o440, 0, 20, True),           # a group this process is not
    (0o640, 10001, 10001, True),    # group-readable, but not a root-owned mount: others of the group
    (0o644, 0, 10001, True),        # Kubernetes' default 0644: anyone
    (0o604, 10001, 10001, True),
])
def test_only_the_fsgroup_mount_shape_is_not_exposure(non_root: None, mode: int, uid: int, gid: int,
                                                      exposed: bool) -> None:
    assert readable_by_others(_stat(mode, uid, gid)) is exposed


def test_as_root_a_group_readable_file_is_exposure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setattr(os, "getgid", lambda: 0)
    # Root reads anything: a group bit serves no purpose then, so it only lets others in.
    assert readable_by_others(_stat(0o440, 0, 0)) is True
    assert readable_by_others(_stat(0o400, 0, 0)) is False
